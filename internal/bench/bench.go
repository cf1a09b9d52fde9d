// Package bench is `veil bench`: it starts a local veil network on
// loopback (authorities in this process, every relay in its own process so
// that its CPU and memory can be read from /proc), measures it the way
// OnionPerf and ../shared/peers/tor/run.sh measure Tor, runs that Tor
// harness in the same invocation, and prints one table of veil against
// Tor with the targets of issue 8 (bench/README.md).
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"time"

	"github.com/veilnet/veil/relay"
)

// Config configures a run. Zero fields take the defaults in brackets.
type Config struct {
	// Dir holds keys, configuration files and relay logs; "" means a
	// temporary directory removed at the end.
	Dir string
	// Out, if set, receives result.json, table.md and the Tor runs.
	Out         string
	Authorities int // [3]
	Relays      int // [6]
	Exits       int // [3]
	// Interval is the voting interval [10s]; the first consensus comes
	// early (authority.Config.EarlyRelays) whatever it is.
	Interval time.Duration
	Fetches  int   // downloads per size [20]
	Circuits int   // fresh circuits timed [20]
	Sizes    []int // [50 KiB, 1 MiB, 5 MiB]
	BulkSize int   // [100 MiB]
	BulkReps int   // single-stream bulk downloads [3]
	Parallel int   // concurrent bulk streams on separate circuits [8]
	// IdleCircuits and OpenStreams are how many circuits and streams the
	// memory figures are measured over [600, 500].
	IdleCircuits int
	OpenStreams  int
	// IdleWait is how long the idle circuits sit before their memory is
	// read a second time, when the relays have dropped their expanded
	// layer keys and their links' read buffers (the baseline for that
	// reading is taken as long after the links' last cells) [two
	// key-release periods + 1 s]; negative: no second reading.
	IdleWait time.Duration
	// QuietWait bounds the wait for other processes to use at most
	// QuietCores before measuring [120s, 0.15]; negative: no wait.
	QuietWait  time.Duration
	QuietCores float64
	// RelayCommand returns the command that runs a relay with the given
	// configuration file (`veil relay run --config FILE`). Required.
	RelayCommand func(configPath string) *exec.Cmd
	// Tor runs ../shared/peers/tor/run.sh after veil; nil: no Tor.
	Tor    *TorConfig
	Logger *slog.Logger
	// Progress receives one line per step.
	Progress func(string)
}

func (c *Config) defaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Authorities, 3)
	def(&c.Relays, 6)
	def(&c.Exits, 3)
	def(&c.Fetches, 20)
	def(&c.Circuits, 20)
	def(&c.BulkSize, 100<<20)
	def(&c.BulkReps, 3)
	def(&c.Parallel, 8)
	def(&c.IdleCircuits, 600)
	def(&c.OpenStreams, 500)
	if c.Interval == 0 {
		c.Interval = 10 * time.Second
	}
	if len(c.Sizes) == 0 {
		c.Sizes = []int{50 << 10, 1 << 20, 5 << 20}
	}
	if c.QuietWait == 0 {
		c.QuietWait = 120 * time.Second
	}
	if c.IdleWait == 0 {
		c.IdleWait = 2*relay.DefaultKeyReleasePeriod + time.Second
	}
	if c.QuietCores == 0 {
		c.QuietCores = 0.15
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
}

// Machine describes where the run took place.
type Machine struct {
	Date      string  `json:"date"`
	Cores     int     `json:"cores"`
	CPU       string  `json:"cpu"`
	MemGiB    float64 `json:"mem_gib"`
	GoVersion string  `json:"go_version"`
	LoadAvg   string  `json:"loadavg_at_start"`
}

// Result is everything a run measured; it is written as result.json.
type Result struct {
	Machine Machine               `json:"machine"`
	Veil    *VeilResult           `json:"veil"`
	Tor     map[string]*TorResult `json:"tor,omitempty"`
	Rows    []Row                 `json:"table"`
}

// Run starts the veil network, measures it, stops it, then runs the Tor
// harness if cfg.Tor is set, and returns every figure with the table.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	if cfg.RelayCommand == nil {
		return nil, errNoRelayCommand
	}
	if cfg.Exits > cfg.Relays || cfg.Relays < 3 || cfg.Authorities < 1 {
		return nil, errors.New("bench: need at least 3 relays, exits <= relays, an authority")
	}
	res := &Result{Machine: machine()}
	if cfg.Out != "" {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return nil, err
		}
	}
	v, err := runVeil(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	res.Veil = v
	if cfg.Tor != nil {
		res.Tor = runTor(ctx, &cfg)
	}
	res.Rows = table(res)
	if cfg.Out != "" {
		if err := writeResult(cfg.Out, res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// runVeil runs the veil half of the benchmark in its own temporary
// directory (unless cfg.Dir is set).
func runVeil(ctx context.Context, cfg *Config) (*VeilResult, error) {
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "veil-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	c := *cfg
	c.Dir = dir
	n, err := prepare(&c)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var runErrs []error
	run := func(f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				errMu.Lock()
				runErrs = append(runErrs, err)
				errMu.Unlock()
			}
		}()
	}
	defer func() {
		n.stopRelays(cfg.Logger)
		cancel()
		wg.Wait()
	}()
	m := &measurer{cfg: &c, net: n, run: run}
	v, err := m.measure(runCtx)
	errMu.Lock()
	defer errMu.Unlock()
	if err == nil && len(runErrs) > 0 {
		err = errors.Join(runErrs...)
	}
	return v, err
}

func machine() Machine {
	m := Machine{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = field(string(b), "model name")
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		fmt.Sscanf(field(string(b), "MemTotal"), "%f", &kb)
		m.MemGiB = kb / (1 << 20)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = string(b[:len(b)-1])
	}
	return m
}
