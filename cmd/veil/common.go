package main

import (
	"errors"
	"log/slog"
	"os"

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
