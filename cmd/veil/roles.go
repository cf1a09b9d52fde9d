package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay"
	"github.com/veilnet/veil/relay/authority"
	"github.com/veilnet/veil/socks"
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

func runClient(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	networkPath := fs.String("network", "", "network file")
	socksAddr := fs.String("socks", "127.0.0.1:9050", "SOCKS5 listen address")
	allowPublic := fs.Bool("socks-allow-non-loopback", false, "allow a non-loopback SOCKS address (anyone who can reach it can use your client)")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	network, err := loadNetwork(*networkPath)
	if err != nil {
		return err
	}
	log := newLogger(*verbose)
	c, err := client.New(client.Config{Network: network, Logger: log})
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
	return srv.Serve(ctx)
}

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

func runAuthority(ctx context.Context, args []string) error {
	sub, args, err := subcommand(args, "init", "run")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("authority "+sub, flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory holding the authority's key")
	name := fs.String("name", "", "the authority's name in the network file")
	address := fs.String("address", "", "host:port of its directory port (init)")
	networkPath := fs.String("network", "", "network file (run)")
	interval := fs.Duration("interval", time.Hour, "voting interval")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	id, err := crypto.LoadOrCreateIdentity(filepath.Join(*dir, "identity.key"), rand.Reader)
	if err != nil {
		return err
	}
	pub := id.Public().(ed25519.PublicKey)
	if sub == "init" {
		if *name == "" || *address == "" {
			return errors.New("--name and --address are required")
		}
		entry := directory.Network{Name: "mynetwork", Authorities: []directory.AuthorityInfo{{Name: *name, Address: *address, Identity: pub}}}
		fmt.Printf("# add this authority to the network file:\n%s", entry.Encode())
		return nil
	}
	network, err := loadNetwork(*networkPath)
	if err != nil {
		return err
	}
	var me *directory.AuthorityInfo
	for i := range network.Authorities {
		if network.Authorities[i].Identity.Equal(pub) {
			me = &network.Authorities[i]
		}
	}
	if me == nil {
		return errors.New("this authority's key is not in the network file")
	}
	ln, err := net.Listen("tcp", me.Address)
	if err != nil {
		return err
	}
	au, err := authority.New(authority.Config{Identity: id, Network: network, Name: me.Name, Listener: ln,
		Interval: *interval, VoteDelay: *interval / 12, SigDelay: *interval / 12, Logger: newLogger(*verbose)})
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Printf("authority %s serving the directory on %s\n", me.Name, ln.Addr())
	return au.Run(ctx)
}
