package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay"
)

func runRelay(ctx context.Context, args []string) error {
	sub, args, err := subcommand(args, "init", "run")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("relay "+sub, flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory holding the relay's keys")
	networkPath := fs.String("network", "", "network file")
	listen := fs.String("listen", "", "address to accept links on, e.g. 0.0.0.0:9001")
	advertise := fs.String("advertise", "", "address published in the descriptor (default: --listen)")
	nickname := fs.String("nickname", "veilrelay", "relay nickname")
	policy := fs.String("exit-policy", "reject *:*", `exit policy, rules separated by commas, e.g. "accept *:80,accept *:443,reject *:*"`)
	bandwidth := fs.Int64("bandwidth", 10<<20, "advertised bandwidth, bytes per second")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	keys, err := relay.LoadOrCreateKeys(*dir, rand.Reader)
	if err != nil {
		return err
	}
	fingerprint := keys.Fingerprint()
	if sub == "init" {
		fmt.Printf("relay keys in %s\nfingerprint %s\n", *dir, fingerprint)
		return nil
	}
	network, err := loadNetwork(*networkPath)
	if err != nil {
		return err
	}
	if *listen == "" {
		return errors.New("--listen is required")
	}
	if *advertise == "" {
		*advertise = *listen
	}
	adv, err := netip.ParseAddrPort(*advertise)
	if err != nil {
		return fmt.Errorf("--advertise: %w", err)
	}
	exitPolicy, err := directory.ParseExitPolicyLines(strings.Split(*policy, ","))
	if err != nil {
		return fmt.Errorf("--exit-policy: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	r, err := relay.New(relay.Config{Nickname: *nickname, Identity: keys.Identity, LinkKey: keys.Link, OnionKey: keys.Onion,
		Listener: ln, Advertise: adv, Bandwidth: *bandwidth, ExitPolicy: exitPolicy, Network: network, Logger: newLogger(*verbose)})
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Printf("relay %s listening on %s\n", fingerprint, ln.Addr())
	return r.Run(ctx)
}
