// Package authority is the directory authority daemon: the real-time
// driver of directory.Authority. It serves the directory protocol over
// HTTP on a given listener, runs the voting schedule, tests relays'
// reachability with link handshakes, and exchanges votes and detached
// signatures with the other authorities of the network
// (docs/spec/directory.md, sections 10, 11 and 14). It also holds the
// authority's key files and configuration file (keys.go, config.go;
// docs/authority-operators.md).
package authority

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
	"github.com/veilnet/veil/relay/dircache"
)

// Server timeouts and limits.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 60 * time.Second
	WriteTimeout      = 60 * time.Second
	IdleTimeout       = 60 * time.Second
	MaxHeaderBytes    = 8 << 10
	// MaxConcurrentRequests bounds requests handled at once; more get 503.
	MaxConcurrentRequests = 64
	// SelfCertLifetime is the lifetime of the certificate New issues when
	// given an online identity key instead of a signer.
	SelfCertLifetime = 365 * 24 * time.Hour
	// shutdownTimeout bounds the graceful part of Run's shutdown.
	shutdownTimeout = 5 * time.Second
)

// Errors.
var (
	ErrConfig     = errors.New("authority: invalid configuration")
	ErrRunTwice   = errors.New("authority: Run called more than once")
	errNotRunning = errors.New("authority: not published")
)

// Config configures an authority daemon.
type Config struct {
	// Signer is the authority's online signing key and the certificate
	// its (possibly offline) identity key issued for it.
	Signer *directory.Signer
	// Identity, used only if Signer is nil, is an online identity key:
	// New then certifies a fresh signing key with it for
	// SelfCertLifetime (the testnet does this).
	Identity ed25519.PrivateKey
	Network  *directory.Network // the network file; must list Name with the signer's identity
	Name     string             // this authority's name in the network file
	Listener net.Listener       // where to serve HTTP; closed by Run
	// Params are the consensus parameters this authority proposes.
	Params directory.Params
	// BadExits are relays this authority's operator votes BadExit.
	BadExits []directory.RelayID
	// TestingAllFlags makes every Running relay Fast, Stable and Guard:
	// for private test networks only (directory.AuthorityConfig).
	TestingAllFlags bool
	// Tester tests reachability; nil means LinkTester().
	Tester Tester
	// EarlyRelays, if positive, lets a new private network publish its
	// first consensus at once (early.go): until it first publishes, the
	// authority votes for the round already under way as soon as
	// EarlyRelays relays have passed its reachability test, instead of
	// waiting for the next aligned round. All authorities of a network
	// should use the same value. The majority and reachability rules are
	// unchanged.
	EarlyRelays int
	// Interval, VoteDelay and SigDelay are the voting schedule; all
	// authorities of a network must use the same values.
	Interval, VoteDelay, SigDelay time.Duration
	Logger                        *slog.Logger      // nil discards logs
	Now                           func() time.Time  // nil means time.Now
	Client                        *dirclient.Client // nil means a new client; used to reach peers
}

// Authority is a running (or runnable) authority daemon.
type Authority struct {
	cfg    Config
	sched  directory.Schedule
	tester Tester
	log    *slog.Logger
	now    func() time.Time
	client *dirclient.Client
	self   int
	sem    chan struct{}
	// reachKick wakes the reachability loop when a descriptor arrives, so
	// a new relay is tested at once rather than at the next tick (a new
	// network's first vote then already lists its relays).
	reachKick chan struct{}
	// reachedKick wakes the early round when a relay passes a test.
	reachedKick chan struct{}
	ran         atomic.Bool

	mu            sync.Mutex // guards the fields below and all calls into core
	core          *directory.Authority
	published     []byte
	publishedDoc  *dircache.Document
	publishedVA   time.Time
	publishedVU   time.Time
	publishedSigs int
	roundsDone    int                        // rounds whose publish step ran (for tests)
	reached       map[directory.RelayID]bool // relays whose latest test passed, until the early round ends
}

// New checks cfg and returns an authority ready to Run.
func New(cfg Config) (*Authority, error) {
	if cfg.Network == nil || cfg.Listener == nil {
		return nil, fmt.Errorf("%w: Network and Listener are required", ErrConfig)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Signer == nil {
		if len(cfg.Identity) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("%w: a signer or an identity key is required", ErrConfig)
		}
		s, err := directory.SelfSigner(&directory.KeyPair{Ed: cfg.Identity}, rand.Reader, cfg.Now(), SelfCertLifetime)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		cfg.Signer = s
	}
	if cfg.Tester == nil {
		cfg.Tester = LinkTester()
	}
	sched := directory.Schedule{Interval: cfg.Interval, VoteDelay: cfg.VoteDelay, SigDelay: cfg.SigDelay}
	core, err := directory.NewAuthority(directory.AuthorityConfig{
		Network: cfg.Network, Schedule: sched, Signer: cfg.Signer, Params: cfg.Params, BadExits: cfg.BadExits, TestingAllFlags: cfg.TestingAllFlags,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if _, err := cfg.Signer.Cert.Check(cfg.Network, cfg.Now()); err != nil {
		return nil, fmt.Errorf("%w: signing certificate: %w", ErrConfig, err)
	}
	self := core.Self()
	if cfg.Network.Authorities[self].Name != cfg.Name {
		return nil, fmt.Errorf("%w: the network file lists this identity under another name", ErrConfig)
	}
	a := &Authority{
		cfg:         cfg,
		sched:       sched,
		reachKick:   make(chan struct{}, 1),
		reachedKick: make(chan struct{}, 1),
		tester:      cfg.Tester,
		log:         cfg.Logger,
		now:         cfg.Now,
		client:      cfg.Client,
		self:        self,
		sem:         make(chan struct{}, MaxConcurrentRequests),
		core:        core,
	}
	if cfg.EarlyRelays > 0 {
		a.reached = make(map[directory.RelayID]bool)
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("authority", cfg.Name)
	if a.client == nil {
		a.client = dirclient.New(nil)
	}
	return a, nil
}

// Run serves HTTP and runs the voting schedule until ctx is cancelled,
// then shuts the server down, waits for every goroutine it started and
// returns nil. It returns an error if the server fails. Run may be called
// once.
func (a *Authority) Run(ctx context.Context) error {
	if a.ran.Swap(true) {
		return ErrRunTwice
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(a.cfg.Listener) }()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		a.loop(ctx)
	}()
	go func() {
		defer wg.Done()
		a.reachLoop(ctx)
	}()
	a.log.Info("directory authority running", "network", a.cfg.Network.Name)

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer scancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		srv.Close()
	}
	if err == nil {
		err = <-serveErr
	}
	wg.Wait()
	a.client.CloseIdleConnections()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	a.log.Info("directory authority stopped")
	return err
}

// HasConsensus reports whether the authority serves a consensus that is
// still within its validity period.
func (a *Authority) HasConsensus() bool {
	_, err := a.Consensus()
	return err == nil
}

// Consensus returns the consensus document the authority serves.
func (a *Authority) Consensus() ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.published == nil || a.now().After(a.publishedVU) {
		return nil, errNotRunning
	}
	return a.published, nil
}

// loop runs the voting schedule until ctx is done.
func (a *Authority) loop(ctx context.Context) {
	var early time.Time
	if a.cfg.EarlyRelays > 0 {
		early = a.earlyRound(ctx)
		a.mu.Lock()
		a.reached = nil // only the early round needs it
		a.mu.Unlock()
	}
	for {
		va := a.sched.NextRound(a.now())
		if !early.IsZero() {
			// Join the round after the early one even if its vote time
			// has passed, so that the early consensus is followed by a
			// fresh one without a gap (early.go).
			if next := early.Add(a.sched.Interval); next.Before(va) && a.now().Before(next) {
				va = next
			}
			early = time.Time{}
		}
		if !a.sleepUntil(ctx, a.sched.VoteTime(va)) {
			return
		}
		a.voteStep(ctx, va, a.now(), a.atLeast(a.sched.SigTime(va), a.sched.SigDelay/2))
		if !a.sleepUntil(ctx, a.sched.SigTime(va)) {
			return
		}
		a.sigStep(ctx, va, a.atLeast(va, a.sched.SigDelay/2))
		if !a.sleepUntil(ctx, va) {
			return
		}
		a.publishStep(ctx, va)
	}
}

// atLeast returns t, or now+d if that is later: a deadline for sending
// that leaves time even in a round joined late.
func (a *Authority) atLeast(t time.Time, d time.Duration) time.Time {
	if lim := a.now().Add(d); t.Before(lim) {
		return lim
	}
	return t
}

// sleepUntil waits until a.now() reaches t; it reports false if ctx ended.
func (a *Authority) sleepUntil(ctx context.Context, t time.Time) bool {
	d := t.Sub(a.now())
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// until returns a context that ends when a.now() reaches t.
func (a *Authority) until(ctx context.Context, t time.Time) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, t.Sub(a.now()))
}
