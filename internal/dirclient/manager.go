package dirclient

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/veilnet/veil/directory"
)

// Manager keeps a client's (or relay's) view of the directory: it
// bootstraps a verified consensus from the authorities, then refreshes it
// before it goes stale from the directory caches the consensus lists,
// falling back to the authorities. Every consensus is verified against
// the network file (directory.VerifyConsensusSignatures) and the local
// clock, with a tolerance for clock skew; a local clock that is clearly
// wrong is reported as a *ClockSkewError.
//
// Typical use:
//
//	m, err := dirclient.NewManager(dirclient.ManagerConfig{Network: net})
//	if err := m.Bootstrap(ctx); err != nil { ... }   // a valid consensus is held
//	go m.Run(ctx)                                     // keep it fresh
//	cons := m.Consensus()                             // nil once expired
//
// A Manager is safe for concurrent use.
type Manager struct {
	cfg    ManagerConfig
	client *Client
	log    *slog.Logger

	mu   sync.Mutex
	cons *directory.Consensus
	raw  []byte
	last error // the last refresh error, nil after a success
	rng  *rand.Rand
}

// ManagerConfig configures a Manager. Only Network is required.
type ManagerConfig struct {
	Network *directory.Network // the trusted network file
	Client  *Client            // nil: New(nil)
	Now     func() time.Time   // nil: time.Now
	Logger  *slog.Logger       // nil discards
	// Rand picks caches and refresh times; nil seeds one from crypto/rand.
	Rand *rand.Rand
	// ClockTolerance is how far the local clock may be behind the
	// consensus's valid-after (or ahead of its valid-until) before it is
	// reported as wrong; 0 means DefaultClockTolerance. A consensus whose
	// valid-after is ahead of the local clock by less than this is
	// accepted.
	ClockTolerance time.Duration
	// OnUpdate, if set, is called (without locks held) with every new
	// consensus the Manager accepts, and its signed bytes.
	OnUpdate func(c *directory.Consensus, raw []byte)
	// Cache makes the Manager behave as a directory cache's: it fetches
	// only from the authorities, and early (in the first eighth of
	// [fresh-until, valid-until]) so clients find the new consensus.
	Cache bool
}

// Manager limits and defaults.
const (
	DefaultClockTolerance = time.Hour
	// maxCacheTries bounds the caches tried per refresh before the
	// authorities.
	maxCacheTries = 3
	// maxRetry bounds the wait between failed refreshes.
	maxRetry = time.Minute
)

// Manager errors.
var (
	ErrNoConsensus = errors.New("dirclient: no valid consensus held")
	ErrNoSource    = errors.New("dirclient: no directory source answered with a valid consensus")
)

// ClockSkewError says that the local clock is outside a verified
// consensus's validity window by more than the tolerance: the consensus
// is authentic (a majority of authorities signed it) but the local clock
// disagrees with them.
type ClockSkewError struct {
	Local      time.Time // the local clock
	ValidAfter time.Time // the consensus window
	ValidUntil time.Time
}

func (e *ClockSkewError) Error() string {
	dir, by := "behind", e.ValidAfter.Sub(e.Local)
	if e.Local.After(e.ValidUntil) {
		dir, by = "ahead", e.Local.Sub(e.ValidUntil)
	}
	return fmt.Sprintf("dirclient: the local clock (%s) is %s by at least %s: the directory authorities' signed consensus is valid from %s to %s; fix the system clock",
		e.Local.UTC().Format(time.RFC3339), dir, by.Round(time.Second), e.ValidAfter.UTC().Format(time.RFC3339), e.ValidUntil.UTC().Format(time.RFC3339))
}

// NewManager checks cfg and returns a Manager holding no consensus.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Network == nil {
		return nil, errors.New("dirclient: ManagerConfig.Network is required")
	}
	if err := cfg.Network.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClockTolerance <= 0 {
		cfg.ClockTolerance = DefaultClockTolerance
	}
	m := &Manager{cfg: cfg, client: cfg.Client, log: cfg.Logger, rng: cfg.Rand}
	if m.client == nil {
		m.client = New(nil)
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.rng == nil {
		var seed [16]byte
		_, _ = crand.Read(seed[:])
		m.rng = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	}
	return m, nil
}

// Consensus returns the consensus held if it is still valid at Now
// (valid-until not passed), else nil. Its Relays carry every field path
// selection and the circuit handshake need. Callers must not modify it.
func (m *Manager) Consensus() *directory.Consensus {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cons == nil || m.cfg.Now().After(m.cons.ValidUntil) {
		return nil
	}
	return m.cons
}

// Raw returns the signed document of the consensus Consensus returns, or
// nil.
func (m *Manager) Raw() []byte {
	if m.Consensus() == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.raw
}

// Err returns the last refresh error (nil after a success).
func (m *Manager) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Accept verifies raw as a consensus at Now (signatures against the
// network file, time window with the clock tolerance) and keeps it if it
// is newer than the one held. It returns the consensus, or why not.
func (m *Manager) Accept(raw []byte) (*directory.Consensus, error) {
	now := m.cfg.Now()
	sc, err := directory.VerifyConsensusSignatures(raw, m.cfg.Network, now)
	if err != nil {
		return nil, err
	}
	tol := m.cfg.ClockTolerance
	switch {
	case now.Before(sc.ValidAfter.Add(-tol)):
		return nil, &ClockSkewError{Local: now, ValidAfter: sc.ValidAfter, ValidUntil: sc.ValidUntil}
	case now.After(sc.ValidUntil.Add(tol)):
		return nil, &ClockSkewError{Local: now, ValidAfter: sc.ValidAfter, ValidUntil: sc.ValidUntil}
	case now.After(sc.ValidUntil):
		return nil, directory.ErrExpired
	}
	c := &sc.Consensus
	m.mu.Lock()
	if m.cons != nil && !c.ValidAfter.After(m.cons.ValidAfter) {
		held := m.cons
		m.mu.Unlock()
		return held, nil // not newer: keep what we have (no rollback)
	}
	m.cons, m.raw = c, raw
	m.mu.Unlock()
	m.log.Info("new consensus", "valid_after", c.ValidAfter, "relays", len(c.Relays))
	if m.cfg.OnUpdate != nil {
		m.cfg.OnUpdate(c, raw)
	}
	return c, nil
}

// sources returns the addresses to try: up to maxCacheTries random
// directory caches from the consensus held (Running ones with a
// directory address), then every authority in random order.
func (m *Manager) sources() []string {
	cons := m.Consensus()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	if cons != nil && !m.cfg.Cache {
		var caches []string
		for i := range cons.Relays {
			r := &cons.Relays[i]
			if r.HasDirCache() && r.Flags.Has(directory.FlagRunning|directory.FlagValid) {
				caches = append(caches, r.DirAddress.String())
			}
		}
		m.rng.Shuffle(len(caches), func(i, j int) { caches[i], caches[j] = caches[j], caches[i] })
		out = append(out, caches[:min(len(caches), maxCacheTries)]...)
	}
	auths := make([]string, len(m.cfg.Network.Authorities))
	for i, a := range m.cfg.Network.Authorities {
		auths[i] = a.Address
	}
	m.rng.Shuffle(len(auths), func(i, j int) { auths[i], auths[j] = auths[j], auths[i] })
	return append(out, auths...)
}

// Refresh tries the sources once each, in order, until one gives a
// consensus Accept takes that is newer than the one held. A clock-skew
// verdict is returned at once: other sources would say the same.
func (m *Manager) Refresh(ctx context.Context) error {
	err := error(ErrNoSource)
	held := m.Consensus()
	for _, addr := range m.sources() {
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
		raw, ferr := m.client.FetchConsensus(ctx, addr)
		if ferr != nil {
			err = fmt.Errorf("%w: %w", ErrNoSource, ferr)
			continue
		}
		c, aerr := m.Accept(raw)
		var skew *ClockSkewError
		if errors.As(aerr, &skew) {
			err = aerr
			break
		}
		if aerr != nil {
			err = fmt.Errorf("%w: %w", ErrNoSource, aerr)
			m.log.Debug("directory source gave an unusable consensus", "err", aerr)
			continue
		}
		if held == nil || c.ValidAfter.After(held.ValidAfter) {
			err = nil
			break
		}
		err = fmt.Errorf("%w: no newer consensus", ErrNoSource)
	}
	m.mu.Lock()
	m.last = err
	m.mu.Unlock()
	return err
}

// Bootstrap returns once a valid consensus is held, refreshing with
// backoff (1 s doubling to a minute). It returns a *ClockSkewError at
// once if the local clock is wrong, and ctx's error if ctx ends first.
func (m *Manager) Bootstrap(ctx context.Context) error {
	wait := time.Second
	for attempt := 1; ; attempt++ {
		if m.Consensus() != nil {
			return nil
		}
		err := m.Refresh(ctx)
		if err == nil {
			return nil
		}
		var skew *ClockSkewError
		if errors.As(err, &skew) {
			m.log.Error("cannot bootstrap", "err", err)
			return err
		}
		// The first failures are expected while a new network makes its
		// first consensus; persistent ones deserve a warning.
		level := slog.LevelInfo
		if attempt > 4 {
			level = slog.LevelWarn
		}
		m.log.Log(ctx, level, "directory bootstrap failed; retrying", "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(2*wait, maxRetry)
	}
}

// NextFetch returns when Run will next fetch: a random time in the first
// half (for a cache, the first eighth) of [fresh-until, valid-until] of
// the consensus held, or now if none is held.
func (m *Manager) NextFetch() time.Time {
	c := m.Consensus()
	if c == nil {
		return m.cfg.Now()
	}
	span := c.ValidUntil.Sub(c.FreshUntil) / 2
	if m.cfg.Cache {
		span /= 4
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if span <= 0 {
		return c.FreshUntil
	}
	return c.FreshUntil.Add(time.Duration(m.rng.Int64N(int64(span))))
}

// Run keeps the consensus fresh until ctx ends: it fetches at NextFetch,
// retrying failures with backoff. It returns ctx's error.
func (m *Manager) Run(ctx context.Context) error {
	wait := time.Second
	for {
		if !sleep(ctx, m.NextFetch().Sub(m.cfg.Now())) {
			return ctx.Err()
		}
		err := m.Refresh(ctx)
		if err == nil {
			wait = time.Second
			continue
		}
		if m.Consensus() == nil {
			m.log.Error("no valid consensus", "err", err)
		} else {
			m.log.Warn("consensus refresh failed", "err", err)
		}
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(2*wait, maxRetry)
	}
}

// sleep waits d (if positive); it reports false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
