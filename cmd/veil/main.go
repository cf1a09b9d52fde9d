// Command veil runs every role of the veil anonymity network: a client
// with a SOCKS5 port, a relay, a directory authority, and a complete
// private test network on loopback.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `veil: an onion-routed anonymity network

usage:
  veil testnet   [--socks ADDR] [--relays N] [--authorities N] [--dir DIR] [--http ADDR]
                                   run a private network on loopback, with a client
  veil client    --network FILE [--socks ADDR] [--state DIR]
                                   run a client with a SOCKS5 port
  veil client status [--state DIR] show the client's guards and circuits
  veil relay init  --dir DIR       create a relay's keys and print its fingerprint
  veil relay check --config FILE   check a relay configuration file
  veil relay run   --config FILE   run a relay (docs/operators.md, docs/relay-config.md)
  veil authority init --dir DIR --name NAME --address HOST:PORT [--pq]
                                   create an authority's identity key, signing key and
                                   certificate, and print its network-file entry
  veil authority certify --identity-dir DIR --dir DIR
                                   issue a new signing key and certificate (identity offline)
  veil authority run --config FILE run a directory authority
  veil sim       [--scenario NAME|FILE] [--seed N] [--out DIR]
                                   simulate a network in virtual time; write metrics
                                   and an HTML report (docs/simulator.md)
  veil bench     [--out DIR] [--no-tor] [--tor run.sh] [--tor-configs fastest,default]
                                   benchmark a local network against Tor (bench/README.md)
  veil sim --analysis torps [--shares 0.05,0.1,0.2] [--clients N] [--days D]
                                   path-compromise analysis: how often an adversary
                                   with a share of guard and exit weight sees both ends

Every command takes -v for debug logs. See README.md and docs/.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "testnet":
		err = runTestnet(ctx, args)
	case "client":
		err = runClient(ctx, args)
	case "relay":
		err = runRelay(ctx, args)
	case "authority":
		err = runAuthority(ctx, args)
	case "sim":
		err = runSim(ctx, args)
	case "bench":
		err = runBench(ctx, args)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "veil: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "veil %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// newLogger logs to stderr: Info by default, Debug with -v.
func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// subcommand splits "init"/"run" off args.
func subcommand(args []string, names ...string) (string, []string, error) {
	if len(args) > 0 {
		for _, n := range names {
			if args[0] == n {
				return n, args[1:], nil
			}
		}
	}
	return "", nil, fmt.Errorf("expected one of %v", names)
}
