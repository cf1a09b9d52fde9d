package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay/authority"
)

const authorityUsage = `usage:
  veil authority init --dir DIR --name NAME --address HOST:PORT [--network-name NAME] [--pq] [--cert-days N]
        create an identity key, a signing key and its certificate in DIR,
        write DIR/authority.toml and print the authority's network-file entry
  veil authority certify --identity-dir DIR --dir DIR [--cert-days N]
        issue a new signing key and certificate with the identity key in
        --identity-dir (which may be an offline copy) into --dir
  veil authority run --config FILE
        run the directory authority (docs/authority-operators.md)
`

func runAuthority(ctx context.Context, args []string) error {
	sub, args, err := subcommand(args, "init", "certify", "run")
	if err != nil {
		return fmt.Errorf("%w\n%s", err, authorityUsage)
	}
	switch sub {
	case "init":
		return authorityInit(args)
	case "certify":
		return authorityCertify(args)
	}
	return authorityRun(ctx, args)
}

func authorityInit(args []string) error {
	fs := flag.NewFlagSet("authority init", flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory to create the keys in")
	name := fs.String("name", "", "the authority's name in the network file")
	address := fs.String("address", "", "host:port of its directory port")
	network := fs.String("network-name", "mynetwork", "the network's name, for the printed entry")
	pq := fs.Bool("pq", false, "hybrid Ed25519 + ML-DSA-65 keys")
	days := fs.Int("cert-days", int(authority.DefaultCertLifetime/(24*time.Hour)), "certificate lifetime in days")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *name == "" || *address == "" {
		return errors.New("--dir, --name and --address are required")
	}
	id, s, err := authority.InitKeys(*dir, *pq, rand.Reader, time.Now(), time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	entry := directory.Network{Name: *network, Authorities: []directory.AuthorityInfo{{
		Name: *name, Address: *address, Identity: id.Public(), IdentityPQ: id.PublicPQ(),
	}}}
	if err := entry.Validate(); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`# veil authority configuration (docs/authority-operators.md)
name = %q
network = %q
data-dir = %q
voting-interval = "1h"
log-level = "info"
`, *name, filepath.Join(*dir, "network.toml"), *dir)
	if err := os.WriteFile(filepath.Join(*dir, "authority.toml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	fmt.Printf("# keys and certificate (expires %s) written to %s\n", s.Cert.Expires.Format(time.RFC3339), *dir)
	fmt.Printf("# move %s off this machine once the network runs; keep a backup\n", authority.FileIdentity)
	fmt.Printf("# add this authority to the network file:\n%s", entry.Encode())
	return nil
}

func authorityCertify(args []string) error {
	fs := flag.NewFlagSet("authority certify", flag.ContinueOnError)
	idDir := fs.String("identity-dir", "", "directory holding identity.key (and identity-pq.key)")
	dir := fs.String("dir", "", "directory to install the new signing key and certificate in")
	days := fs.Int("cert-days", int(authority.DefaultCertLifetime/(24*time.Hour)), "certificate lifetime in days")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *idDir == "" || *dir == "" {
		return errors.New("--identity-dir and --dir are required")
	}
	id, err := authority.LoadIdentity(*idDir)
	if err != nil {
		return err
	}
	s, err := authority.Certify(id, *dir, rand.Reader, time.Now(), time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	fmt.Printf("new signing key and certificate in %s, valid until %s; restart the authority to use them\n",
		*dir, s.Cert.Expires.Format(time.RFC3339))
	return nil
}

func authorityRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("authority run", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return errors.New("--config FILE is required")
	}
	b, err := os.ReadFile(*cfgPath)
	if err != nil {
		return err
	}
	fc, err := authority.ParseConfig(b)
	if err != nil {
		return err
	}
	network, err := loadNetwork(fc.Network)
	if err != nil {
		return err
	}
	signer, err := authority.LoadSigner(fc.DataDir)
	if err != nil {
		return err
	}
	i := network.Index(signer.Cert.Identity)
	if i < 0 || network.Authorities[i].Name != fc.Name {
		return fmt.Errorf("the network file does not list %q with this certificate's identity", fc.Name)
	}
	if left := time.Until(signer.Cert.Expires); left < 14*24*time.Hour {
		fmt.Fprintf(os.Stderr, "warning: the signing certificate expires in %s; run veil authority certify\n", left.Round(time.Hour))
	}
	listen := network.Authorities[i].Address
	if fc.Listen.IsValid() {
		listen = fc.Listen.String()
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(fc.LogLevel))
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	au, err := authority.New(authority.Config{
		Signer: signer, Network: network, Name: fc.Name, Listener: ln,
		Interval: fc.VotingInterval, VoteDelay: fc.VoteDelay, SigDelay: fc.SigDelay,
		Params: fc.Params, BadExits: fc.BadExits, Logger: log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Printf("authority %s serving the directory on %s\n", fc.Name, ln.Addr())
	return au.Run(ctx)
}
