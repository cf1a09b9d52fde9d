package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/veilnet/veil/sim/scenario"
	"github.com/veilnet/veil/sim/torps"
)

// analysisArgs recognises `veil sim --analysis NAME [flags]` (or
// --analysis=NAME) and returns NAME and the remaining flags.
func analysisArgs(args []string) (string, []string, bool) {
	if len(args) == 0 {
		return "", nil, false
	}
	a := strings.TrimLeft(args[0], "-")
	if name, ok := strings.CutPrefix(a, "analysis="); ok && a != args[0] {
		return name, args[1:], true
	}
	if a == "analysis" && a != args[0] && len(args) > 1 {
		return args[1], args[2:], true
	}
	return "", nil, false
}

// runAnalysis runs a `veil sim --analysis` (docs/simulator.md).
func runAnalysis(name string, args []string) error {
	if name != "torps" {
		return fmt.Errorf("unknown analysis %q (known: torps)", name)
	}
	fs := flag.NewFlagSet("sim --analysis torps", flag.ContinueOnError)
	scName := fs.String("scenario", "tor-1pct", "scenario whose [relays] table is the honest network")
	relays := fs.Int("relays", 0, "override the number of honest relays")
	clients := fs.Int("clients", 1000, "clients")
	days := fs.Int("days", 30, "simulated days")
	shares := fs.String("shares", "0.05,0.1,0.2", "adversary's shares of guard and of exit weight, comma-separated")
	advRelays := fs.Int("adversary-relays", 1, "guard relays and exit relays the adversary adds (the share split among them)")
	session := fs.Duration("session", 2*time.Hour, "each client's daily activity")
	think := fs.Duration("think", 20*time.Second, "mean time between a client's streams")
	port := fs.Uint("port", 443, "destination port of every stream")
	seed := fs.Uint64("seed", 1, "random seed")
	out := fs.String("out", "", "output directory (default: sim-torps-<seed>)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	sc, err := scenario.Load(*scName)
	if err != nil {
		return err
	}
	cfg := torps.Config{Network: sc.Relays, Clients: *clients, Days: *days, Relays: *advRelays,
		Session: *session, Think: *think, Port: uint16(*port), Seed: *seed}
	if *relays > 0 {
		cfg.Network.Count = *relays
	}
	if *port < 1 || *port > 65535 {
		return fmt.Errorf("--port must be 1..65535")
	}
	for _, s := range strings.Split(*shares, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("--shares: %w", err)
		}
		cfg.Shares = append(cfg.Shares, v)
	}
	start := time.Now()
	rs, err := torps.Run(cfg)
	if err != nil {
		return err
	}
	wall := time.Since(start)
	if *out == "" {
		*out = fmt.Sprintf("sim-torps-%d", *seed)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	js, err := torps.JSON(cfg, rs)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "torps.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "report.html"), torps.HTML(cfg, rs), 0o644); err != nil {
		return err
	}
	fmt.Print(torps.Table(cfg, rs))
	fmt.Printf("%.1fs wall; wrote %s/torps.json and %s/report.html\n", wall.Seconds(), *out, *out)
	return nil
}
