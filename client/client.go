// Package client is veil's client: it fetches and verifies the consensus,
// picks paths, builds three-hop circuits over links to guards, and opens
// streams through them as net.Conns. Package socks puts a SOCKS5 front end
// on top; Go programs can use Dial directly.
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

// Config configures a client.
type Config struct {
	Network *directory.Network
	Logger  *slog.Logger
	Rand    io.Reader
	Now     func() time.Time
	// Progress, if set, is told of bootstrap progress (0..100).
	Progress func(percent int, what string)
	// PathLength is the number of hops per circuit (default 3).
	PathLength int
	// MaxCircuitDirtiness is how long a circuit takes new streams after
	// its first one (default 10 minutes, as Tor).
	MaxCircuitDirtiness time.Duration
}

// Timeouts.
const (
	CircuitBuildTimeout = 30 * time.Second
	StreamOpenTimeout   = 60 * time.Second
	FetchTimeout        = 15 * time.Second
)

// Client is a running client.
type Client struct {
	cfg    Config
	log    *slog.Logger
	dialer net.Dialer

	mu        sync.Mutex
	consensus *directory.Consensus
	links     map[directory.RelayID]*clientLink
	circs     []*clientCirc
	guard     *directory.RelayID
	closed    bool
	wg        sync.WaitGroup
	ctx       context.Context
	cancel    context.CancelFunc
}

var (
	// ErrNoConsensus is returned before a valid consensus is held.
	ErrNoConsensus = errors.New("client: no valid consensus")
	// ErrNoPath is returned when no path satisfies the constraints.
	ErrNoPath = errors.New("client: no suitable path")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("client: closed")
)

// New returns a client. Call Bootstrap before dialing.
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
	if cfg.MaxCircuitDirtiness == 0 {
		cfg.MaxCircuitDirtiness = 10 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, log: cfg.Logger, links: make(map[directory.RelayID]*clientLink), ctx: ctx, cancel: cancel}
	c.dialer.Timeout = 10 * time.Second
	return c, nil
}

func (c *Client) progress(pct int, what string) {
	c.log.Info(fmt.Sprintf("bootstrapped %d%%: %s", pct, what))
	if c.cfg.Progress != nil {
		c.cfg.Progress(pct, what)
	}
}

// Bootstrap fetches a consensus signed by a majority of the authorities,
// builds a first circuit so the first request does not wait, and starts
// refreshing the consensus before it goes stale. It returns when the client
// is ready or ctx is done.
func (c *Client) Bootstrap(ctx context.Context) error {
	c.progress(5, "fetching the consensus")
	for {
		err := c.fetchConsensus(ctx)
		if err == nil {
			break
		}
		c.log.Info("no usable consensus yet", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("client: bootstrap: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
	c.mu.Lock()
	n := len(c.consensus.Relays)
	c.mu.Unlock()
	c.progress(40, fmt.Sprintf("consensus verified, %d relays", n))
	c.goLoop(c.refreshLoop)
	c.progress(60, "building a first circuit")
	for {
		circ, err := c.buildCircuit(ctx, "", 80)
		if err == nil {
			c.mu.Lock()
			c.circs = append(c.circs, circ)
			c.mu.Unlock()
			break
		}
		c.log.Info("first circuit failed", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("client: bootstrap: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	c.progress(100, "done")
	return nil
}

// fetchConsensus asks the authorities, in random order, until one serves a
// consensus that verifies against the network file.
func (c *Client) fetchConsensus(ctx context.Context) error {
	auths := c.cfg.Network.Authorities
	start := c.randIntn(len(auths))
	var errs []error
	for i := range auths {
		a := auths[(start+i)%len(auths)]
		fctx, cancel := context.WithTimeout(ctx, FetchTimeout)
		raw, err := dirclient.FetchConsensus(fctx, a.Address)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.Name, err))
			continue
		}
		cons, err := directory.VerifyConsensus(raw, c.cfg.Network, c.cfg.Now())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.Name, err))
			continue
		}
		c.mu.Lock()
		if c.consensus == nil || cons.ValidAfter.After(c.consensus.ValidAfter) {
			c.consensus = cons
		}
		c.mu.Unlock()
		return nil
	}
	return errors.Join(errs...)
}

// refreshLoop fetches a new consensus once the current one stops being
// fresh, retrying every few seconds until one arrives.
func (c *Client) refreshLoop(ctx context.Context) {
	for {
		c.mu.Lock()
		wait := c.consensus.FreshUntil.Sub(c.cfg.Now())
		c.mu.Unlock()
		wait = max(wait, 2*time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := c.fetchConsensus(ctx); err != nil {
			c.log.Warn("consensus refresh failed", "err", err)
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

func (c *Client) randIntn(n int) int { return int(c.randIntn64(int64(n))) }

// Consensus returns the consensus in use, or nil.
func (c *Client) Consensus() *directory.Consensus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.consensus
}

// Close tears down every circuit and link and waits for the client's
// goroutines.
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
	return nil
}
