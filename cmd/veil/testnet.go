package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/veilnet/veil/sim"
)

func runTestnet(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("testnet", flag.ContinueOnError)
	socksAddr := fs.String("socks", "127.0.0.1:9050", "client SOCKS5 listen address")
	relays := fs.Int("relays", 6, "number of relays")
	exits := fs.Int("exits", 0, "number of exits (default: a third of the relays, at least 2)")
	auths := fs.Int("authorities", 3, "number of directory authorities")
	dir := fs.String("dir", "", "directory for keys and the network file (default: temporary)")
	httpAddr := fs.String("http", "127.0.0.1:8000", "serve a test page and /file here (empty: none)")
	interval := fs.Duration("interval", 10*time.Second, "consensus voting interval")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	log := newLogger(*verbose)
	if !*verbose {
		log = quietLogger()
	}
	if *httpAddr != "" {
		if _, err := sim.FileServer(ctx, *httpAddr, 1<<20); err != nil {
			return fmt.Errorf("test web server: %w", err)
		}
	}
	tn, err := sim.StartTestnet(ctx, sim.TestnetConfig{
		Dir: *dir, Authorities: *auths, Relays: *relays, Exits: *exits, SocksAddr: *socksAddr,
		VotingInterval: *interval, Logger: log,
		Progress: func(s string) { fmt.Printf("[%6.2fs] %s\n", time.Since(start).Seconds(), s) },
	})
	if err != nil {
		return err
	}
	fmt.Printf("[%6.2fs] ready: SOCKS5 proxy on %s\n\n", time.Since(start).Seconds(), tn.Socks.Addr())
	if *httpAddr != "" {
		fmt.Printf("try:\n  curl --socks5-hostname %s http://%s/file -o file\n\n", tn.Socks.Addr(), *httpAddr)
	}
	fmt.Printf("network file: %s/network.toml\nCtrl-C stops everything.\n", tn.Dir)
	<-ctx.Done()
	fmt.Println("\nstopping...")
	return tn.Close()
}
