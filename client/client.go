// Package client is veil's client: it fetches and verifies the consensus,
// keeps a persistent set of guards, picks bandwidth-weighted paths, keeps
// circuits ready before they are needed, and opens streams through them as
// net.Conns. Package socks puts a SOCKS5 front end on top; Go programs use
// Dial, DialStream, HTTPTransport and HTTPClient directly. docs/client.md
// is the user's guide.
//
// Privacy contract: logs at Info and above name relays (by nickname) but
// never a destination, a client address or an isolation key, and no
// hostname is ever resolved locally.
package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
)

// Config configures a client. Only Network is required.
type Config struct {
	Network *directory.Network
	Logger  *slog.Logger
	Rand    io.Reader
	Now     func() time.Time
	// Progress, if set, is told of bootstrap progress (0..100).
	Progress func(percent int, what string)
	// StateDir keeps the guard sample and learned build times across
	// restarts (created 0700). Empty: nothing is kept, and every start
	// samples new guards, which is worse for anonymity.
	StateDir string
	// PathLength is the number of hops per circuit (default 3).
	PathLength int
	// MaxCircuitDirtiness is how long a circuit takes new streams after
	// its first one (default 10 minutes, as Tor).
	MaxCircuitDirtiness time.Duration
	// PreemptiveCircuits is how many clean circuits are kept ready for
	// each recently used port (default 2; negative: none).
	PreemptiveCircuits int
	// StatusInterval is how often a status line is logged at Info and the
	// status file is written (default 5 minutes; negative: never).
	StatusInterval time.Duration
}

// Timeouts and bounds.
const (
	// CircuitBuildTimeout is the build timeout before any was learned.
	CircuitBuildTimeout = InitialBuildTimeout
	// StreamOpenTimeout bounds DialStream as a whole, retries included.
	StreamOpenTimeout = 60 * time.Second
	// StreamAttemptTimeout bounds waiting for one exit's CONNECTED before
	// the stream is tried on another circuit (Tor uses 10 to 15 s).
	StreamAttemptTimeout = 15 * time.Second
	// FetchTimeout bounds one consensus fetch.
	FetchTimeout = 15 * time.Second
	// LinkDialTimeout bounds connecting to a guard.
	LinkDialTimeout = 10 * time.Second
	// MaxConcurrentBuilds bounds circuits being built at once.
	MaxConcurrentBuilds = 8
	// MaxCircuits bounds open circuits; beyond it DialStream fails.
	MaxCircuits = 256
	// dialAttempts is how many circuits one DialStream may try.
	dialAttempts = 4
)

// Client is a running client. Its methods are safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	dialer net.Dialer

	buildSem chan struct{} // one token per circuit being built
	saveMu   sync.Mutex    // serialises state file writes
	wg       sync.WaitGroup
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	dir      *dirclient.Manager

	mu        sync.Mutex
	consensus *directory.Consensus
	links     map[directory.RelayID]*clientLink
	circs     []*clientCirc
	guards    GuardSet
	cbt       *BuildTimeout
	predicted map[uint16]time.Time            // port → last stream to it
	suspect   map[directory.RelayID]time.Time // relay → avoid until
	building  int                             // preemptive builds in flight
	saved     []byte                          // the state file as last written
	ready     bool
	closed    bool
	kick      chan struct{} // wakes the maintenance loop
}

var (
	// ErrNoConsensus is returned before a valid consensus is held.
	ErrNoConsensus = errors.New("client: no valid consensus")
	// ErrNoPath is returned when no path satisfies the constraints.
	ErrNoPath = errors.New("client: no suitable path")
	// ErrNoGuard is returned when no sampled guard is listed.
	ErrNoGuard = errors.New("client: no usable guard")
	// ErrTooManyCircuits is returned when MaxCircuits are open.
	ErrTooManyCircuits = errors.New("client: too many open circuits")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("client: closed")
)

// New returns a client; it loads the state directory, if any, but touches
// no network. Call Bootstrap before dialing.
func New(cfg Config) (*Client, error) {
	if cfg.Network == nil || len(cfg.Network.Authorities) == 0 {
		return nil, errors.New("client: network file with authorities required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PathLength == 0 {
		cfg.PathLength = 3
	}
	if cfg.PathLength < 2 || cfg.PathLength > 8 {
		return nil, errors.New("client: PathLength must be 2..8")
	}
	if cfg.MaxCircuitDirtiness == 0 {
		cfg.MaxCircuitDirtiness = 10 * time.Minute
	}
	if cfg.PreemptiveCircuits == 0 {
		cfg.PreemptiveCircuits = 2
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 5 * time.Minute
	}
	c := &Client{cfg: cfg, log: cfg.Logger, links: make(map[directory.RelayID]*clientLink),
		buildSem: make(chan struct{}, MaxConcurrentBuilds), cbt: NewBuildTimeout(),
		predicted: make(map[uint16]time.Time), suspect: make(map[directory.RelayID]time.Time),
		kick: make(chan struct{}, 1)}
	c.dialer.Timeout = LinkDialTimeout
	if cfg.StateDir != "" {
		if err := ensureStateDir(cfg.StateDir); err != nil {
			return nil, err
		}
		st, err := loadState(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		c.guards = st.GuardSet.Clone()
		for _, ms := range st.BuildTimesMS {
			c.cbt.Observe(time.Duration(ms) * time.Millisecond)
		}
		c.saved = st.Encode()
	}
	dir, err := c.newDirectory()
	if err != nil {
		return nil, err
	}
	c.dir = dir
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

func (c *Client) progress(pct int, what string) {
	c.log.Info(fmt.Sprintf("bootstrapped %d%%: %s", pct, what))
	if c.cfg.Progress != nil {
		c.cfg.Progress(pct, what)
	}
}

// Bootstrap fetches a consensus signed by a majority of the authorities,
// chooses guards, builds a first circuit so the first request does not
// wait, and starts the background work (consensus refresh, preemptive
// circuits, status). It returns nil when the client is ready, or an error
// when ctx is done first or the client was closed. Call it once.
func (c *Client) Bootstrap(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // Close aborts a bootstrap in progress
		select {
		case <-c.ctx.Done():
			stop()
		case <-ctx.Done():
		}
	}()
	c.progress(5, "fetching the consensus")
	var skew error
	if err := retry(ctx, time.Second, func() error {
		err := c.fetchConsensus(ctx)
		if errors.Is(err, errClockSkew) {
			skew = err
			return nil // stop: every source would say the same
		}
		return err
	}, func(err error) {
		c.log.Info("no usable consensus yet", "err", err)
	}); err != nil {
		return fmt.Errorf("client: bootstrap: %w", err)
	}
	if skew != nil {
		c.log.Error("cannot bootstrap", "err", skew)
		return fmt.Errorf("client: bootstrap: %w", skew)
	}
	cons := c.Consensus()
	c.progress(40, fmt.Sprintf("consensus verified, %d relays", len(cons.Relays)))
	c.mu.Lock()
	guards := make([]string, 0, len(c.guards.Entries))
	for _, e := range c.guards.Entries {
		guards = append(guards, e.Nickname)
	}
	c.mu.Unlock()
	c.progress(50, fmt.Sprintf("guards chosen: %v", guards))
	c.goLoop(c.refreshLoop)
	c.progress(60, "building a first circuit")
	now := c.cfg.Now()
	c.mu.Lock()
	c.predicted[80], c.predicted[443] = now, now
	c.mu.Unlock()
	if err := retry(ctx, 500*time.Millisecond, func() error {
		circ, err := c.buildCircuit(ctx, 80)
		if err == nil {
			err = c.addCirc(circ)
		}
		return err
	}, func(err error) { c.log.Info("first circuit failed", "err", err) }); err != nil {
		return fmt.Errorf("client: bootstrap: %w", err)
	}
	c.progress(100, "done")
	c.mu.Lock()
	c.ready = true
	c.mu.Unlock()
	c.goLoop(c.maintainLoop)
	c.log.Info("ready")
	if c.cfg.StatusInterval > 0 {
		c.logStatus()
	}
	return nil
}

// retry calls f until it succeeds or ctx is done, waiting pause between
// tries and telling failed of each failure.
func retry(ctx context.Context, pause time.Duration, f func() error, failed func(error)) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		failed(err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (c *Client) goLoop(f func(context.Context)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(c.ctx)
	}()
}

// Consensus returns the consensus in use, or nil.
func (c *Client) Consensus() *directory.Consensus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.consensus
}

// Close tears down every circuit and link, writes the state file and waits
// for every goroutine the client started. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	links := make([]*clientLink, 0, len(c.links))
	for _, l := range c.links {
		links = append(links, l)
	}
	c.mu.Unlock()
	c.cancel()
	for _, l := range links {
		l.link.Close()
	}
	c.wg.Wait()
	return c.saveState()
}

// saveState writes the state file if it changed (no-op without StateDir).
func (c *Client) saveState() error {
	if c.cfg.StateDir == "" {
		return nil
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	st := State{GuardSet: c.guards.Clone()}
	for _, d := range c.cbt.Completed() {
		st.BuildTimesMS = append(st.BuildTimesMS, d.Milliseconds())
	}
	b := st.Encode()
	same := string(b) == string(c.saved)
	c.mu.Unlock()
	if same {
		return nil
	}
	if err := writeFileAtomic(c.cfg.StateDir, StateFileName, b); err != nil {
		c.log.Warn("could not write the state file", "err", err)
		return fmt.Errorf("client: writing state: %w", err)
	}
	c.mu.Lock()
	c.saved = b
	c.mu.Unlock()
	return nil
}
