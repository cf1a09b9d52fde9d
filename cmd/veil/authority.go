package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay/authority"
)

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
