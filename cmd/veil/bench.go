package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/veilnet/veil/internal/bench"
	"github.com/veilnet/veil/relay"
)

// runBench is `veil bench` (bench/README.md): a local veil network
// measured OnionPerf-style, then the Tor harness, then one table.
func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	out := fs.String("out", "", "directory for result.json, table.md and the Tor runs (default: $TMPDIR/veil-bench-STAMP)")
	dir := fs.String("dir", "", "keep the veil network's keys, configuration files and relay logs here (default: temporary)")
	torScript := fs.String("tor", "", "the Tor harness (default: ../shared/peers/tor/run.sh beside the repository, if present)")
	torConfigs := fs.String("tor-configs", "fastest,default", "Tor configurations to run, in order: fastest (Vanilla scheduler, delayed ACKs off), default")
	noTor := fs.Bool("no-tor", false, "measure veil only")
	relays := fs.Int("relays", 6, "relays, each its own process")
	exits := fs.Int("exits", 3, "of which exits")
	auths := fs.Int("authorities", 3, "directory authorities (in the bench process)")
	interval := fs.Duration("interval", 10*time.Second, "voting interval (the first consensus comes early regardless)")
	fetches := fs.Int("fetches", 20, "downloads per size")
	circuits := fs.Int("circuits", 20, "fresh circuit builds timed")
	sizes := fs.String("sizes", "50KiB,1MiB,5MiB", "download sizes")
	bulk := fs.String("bulk", "100MiB", "bulk file size")
	bulkReps := fs.Int("bulk-reps", 3, "single-stream bulk downloads")
	parallel := fs.Int("parallel", 8, "concurrent bulk streams, each on its own circuit")
	idle := fs.Int("idle-circuits", 600, "circuits opened to measure memory per idle circuit")
	streams := fs.Int("open-streams", 500, "streams held open to measure memory per stream")
	quiet := fs.Duration("quiet-wait", 120*time.Second, "wait up to this long for other processes to go quiet before measuring (0: no wait)")
	idleWait := fs.Duration("idle-wait", 2*relay.DefaultKeyReleasePeriod+time.Second, "read the idle circuits' memory again after this long without a cell, when the relays have dropped their layer keys (0: do not)")
	verbose := fs.Bool("v", false, "debug logs")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the bench process (client, SOCKS port, web server, authorities) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	cfg := bench.Config{
		Dir: *dir, Out: *out, Authorities: *auths, Relays: *relays, Exits: *exits, Interval: *interval,
		Fetches: *fetches, Circuits: *circuits, BulkReps: *bulkReps, Parallel: *parallel,
		IdleCircuits: *idle, OpenStreams: *streams, QuietWait: *quiet,
	}
	if *quiet == 0 {
		cfg.QuietWait = -1
	}
	cfg.IdleWait = *idleWait
	if *idleWait == 0 {
		cfg.IdleWait = -1
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := parseBytes(s)
		if err != nil {
			return fmt.Errorf("--sizes: %w", err)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	if cfg.BulkSize, err = parseBytes(*bulk); err != nil {
		return fmt.Errorf("--bulk: %w", err)
	}
	if cfg.Out == "" {
		cfg.Out = filepath.Join(os.TempDir(), "veil-bench-"+time.Now().UTC().Format("20060102T150405Z"))
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.RelayCommand = func(path string) *exec.Cmd { return exec.Command(exe, "relay", "run", "--config", path) }
	if !*noTor {
		script := *torScript
		if script == "" {
			script = defaultTorScript()
		}
		if script == "" {
			fmt.Println("no Tor harness found (../shared/peers/tor/run.sh beside the repository); measuring veil only")
		} else {
			cfg.Tor = &bench.TorConfig{Script: script, Configs: strings.Split(*torConfigs, ",")}
		}
	}
	log := quietLogger()
	if *verbose {
		log = newLogger(true)
	}
	cfg.Logger = log
	start := time.Now()
	cfg.Progress = func(s string) { fmt.Printf("[%7.2fs] %s\n", time.Since(start).Seconds(), s) }
	res, err := bench.Run(ctx, cfg)
	if res != nil {
		fmt.Printf("\n%s\nresults: %s\n", res.Markdown(), cfg.Out)
	}
	return err
}

// defaultTorScript finds ../shared/peers/tor/run.sh beside the
// repository that holds the working directory.
func defaultTorScript() string {
	d, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			p := filepath.Join(d, "..", "shared", "peers", "tor", "run.sh")
			if _, err := os.Stat(p); err == nil {
				return filepath.Clean(p)
			}
			return ""
		}
		parent := filepath.Dir(d)
		if parent == d {
			return ""
		}
		d = parent
	}
}

// parseBytes reads "100MiB", "50KiB" or a plain byte count.
func parseBytes(s string) (int, error) {
	s = strings.TrimSpace(s)
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, errors.New("want a positive size such as 50KiB, 5MiB or 1000")
	}
	return n * mult, nil
}
