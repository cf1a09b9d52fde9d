//go:build unix

package main

import "syscall"

// cpuSeconds is the CPU time the process has used, user plus system
// (getrusage), and where the figure came from.
func cpuSeconds() (float64, string) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return runtimeCPUSeconds(), "Go runtime estimate"
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime), "getrusage"
}
