//go:build !unix

package main

// selfMaxRSS is unknown on this platform: peak RSS reads as unknown.
func selfMaxRSS() uint64 { return 0 }
