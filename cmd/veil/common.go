package main

import (
	"errors"
	"log/slog"
	"os"
	"runtime/pprof"

	"github.com/veilnet/veil/directory"
)

// quietLogger shows only warnings and errors.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func loadNetwork(path string) (*directory.Network, error) {
	if path == "" {
		return nil, errors.New("--network FILE is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return directory.ParseNetwork(b)
}

// startCPUProfile writes a CPU profile of this process to path (none if
// path is empty) until the returned stop runs.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
