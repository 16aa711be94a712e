//go:build !unix

package main

import "time"

// cpuTime is unknown on this platform: CPU per record reads as 0.
func cpuTime() time.Duration { return 0 }
