//go:build unix

package main

import (
	"runtime"
	"syscall"
)

// selfMaxRSS is this process's peak resident set size by getrusage
// (ru_maxrss: kilobytes on Linux and the BSDs, bytes on macOS); 0 when
// unknown.
func selfMaxRSS() uint64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil || ru.Maxrss <= 0 {
		return 0
	}
	if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		return uint64(ru.Maxrss)
	}
	return uint64(ru.Maxrss) << 10
}
