package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/socks"
)

// defaultStateDir is $XDG_STATE_HOME/veil/client, else
// ~/.local/state/veil/client.
func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "veil", "client")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "veil", "client")
	}
	return ""
}

// runClient runs `veil client [status] ...`.
func runClient(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "status" {
		return runClientStatus(args[1:])
	}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	networkPath := fs.String("network", "", "network file")
	socksAddr := fs.String("socks", "127.0.0.1:9050", "SOCKS5 listen address")
	allowPublic := fs.Bool("socks-allow-non-loopback", false, "allow a non-loopback SOCKS address (anyone who can reach it can use your client)")
	stateDir := fs.String("state", defaultStateDir(), "state directory: guards and learned timeouts are kept here (\"\" keeps nothing)")
	statusEvery := fs.Duration("status-interval", 5*time.Minute, "how often to log a status line and write the status file")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	network, err := loadNetwork(*networkPath)
	if err != nil {
		return err
	}
	log := newLogger(*verbose)
	c, err := client.New(client.Config{Network: network, Logger: log, StateDir: *stateDir, StatusInterval: *statusEvery})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Bootstrap(ctx); err != nil {
		return err
	}
	srv, err := socks.Listen(socks.Config{Addr: *socksAddr, AllowNonLoopback: *allowPublic, Dialer: socks.ClientDialer(c), Logger: log})
	if err != nil {
		return err
	}
	fmt.Printf("ready: SOCKS5 proxy on %s\n", srv.Addr())
	fmt.Print(c.Status())
	return srv.Serve(ctx)
}

// runClientStatus prints the status a running client last wrote to its
// state directory.
func runClientStatus(args []string) error {
	fs := flag.NewFlagSet("client status", flag.ContinueOnError)
	stateDir := fs.String("state", defaultStateDir(), "the running client's state directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *stateDir == "" {
		return errors.New("--state DIR is required")
	}
	st, err := client.ReadStatus(*stateDir)
	if err != nil {
		return fmt.Errorf("%w (is a client running with --state %s?)", err, *stateDir)
	}
	fmt.Printf("as of %s (%v ago):\n%s", st.Time.Format(time.RFC3339), time.Since(st.Time).Round(time.Second), st)
	return nil
}
