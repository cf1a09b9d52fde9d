//go:build !unix

package main

// cpuSeconds is the Go runtime's estimate of the CPU time used.
func cpuSeconds() (float64, string) { return runtimeCPUSeconds(), "Go runtime estimate" }
