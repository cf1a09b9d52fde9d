// Package relay is the relay node: it accepts links, keeps the circuit
// table, extends circuits to other relays, and, as an exit, resolves host
// names, enforces its exit policy and connects to targets. The protocol
// logic lives in package circuit; this package is its real driver over
// TCP with goroutines.
//
// Everything is bounded (docs/operators.md, "Limits"): links in total and
// per address, circuits per link, CREATEs per second per client address,
// cells queued per circuit, bytes queued in the whole relay (an OOM
// handler closes the circuits whose queued cells waited longest), and every handshake has
// a timeout. Relayed traffic passes one token bucket in each direction.
package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
	"github.com/veilnet/veil/internal/linkio"
	"github.com/veilnet/veil/relay/exitdns"
	"github.com/veilnet/veil/relay/metrics"
)

// Config configures a relay. Zero values mean the documented defaults.
type Config struct {
	Nickname  string
	Identity  ed25519.PrivateKey
	LinkKey   crypto.StaticKey
	OnionKey  *crypto.OnionKey
	Listener  net.Listener   // accepts links
	Advertise netip.AddrPort // the address published in the descriptor
	// Listeners are more listeners (e.g. IPv6 beside IPv4) served like
	// Listener and closed by Run.
	Listeners []net.Listener
	// Bandwidth is the advertised bytes per second; 0 means BandwidthRate.
	// With both set, the lower is published.
	Bandwidth int64
	// BandwidthRate and BandwidthBurst limit relayed traffic in each
	// direction (bytes per second, bytes); 0 means unlimited.
	BandwidthRate, BandwidthBurst int64
	// ExitPolicy is published and enforced; nil means a non-exit.
	ExitPolicy *directory.ExitPolicy
	// AllowPrivateExit lets the exit connect to private and loopback
	// addresses. Only a private test network sets it; never a default.
	AllowPrivateExit bool
	// ExtendAllowPrivate lets the relay extend circuits to relays on
	// private and loopback addresses. Only a private test network sets it.
	ExtendAllowPrivate bool
	Network            *directory.Network
	Family             []directory.RelayID // published; sorted, distinct
	Contact            string              // published
	DirAddress         netip.AddrPort      // published directory cache address; zero if none
	// UploadInterval is how often the descriptor is uploaded again.
	UploadInterval time.Duration
	// Directory, if set, is a consensus manager the caller runs (e.g. the
	// directory cache's); otherwise the relay runs one of its own.
	Directory *dirclient.Manager
	// ConsensusInterval is how often the relay looks at the consensus it
	// holds for its own listing (default 10 seconds, a map lookup;
	// negative disables following the consensus altogether).
	ConsensusInterval time.Duration
	Logger            *slog.Logger
	// LogSensitive lets debug logs carry client addresses, destinations
	// and raw network errors. Off by default.
	LogSensitive bool
	Rand         io.Reader
	// Resolver resolves exit host names; nil uses net.DefaultResolver.
	// DNS, if set, replaces it (tests inject fakes here).
	Resolver *net.Resolver
	DNS      exitdns.Resolver
	// DNSCacheSize bounds the exit's DNS cache (default
	// exitdns.DefaultCacheSize; negative disables the cache).
	DNSCacheSize int
	// DNSTimeout and ConnectTimeout bound exit lookups and connects
	// (defaults ResolveTimeout, ConnectTimeout).
	DNSTimeout, ConnectTimeout time.Duration
	Now                        func() time.Time
	// MaxInboundLinks bounds accepted links, handshakes included
	// (default DefaultMaxInboundLinks); beyond it new connections are
	// closed at once.
	MaxInboundLinks int
	// MaxLinksPerAddress bounds the inbound links from one IP address
	// (default DefaultMaxLinksPerAddress). Links from relays listed in
	// the consensus stop counting once authenticated.
	MaxLinksPerAddress int
	// CreateRate and CreateBurst are the token bucket of CREATEs per
	// client address (defaults DefaultCreateRate, DefaultCreateBurst).
	// Relays listed in the consensus are exempt.
	CreateRate  float64
	CreateBurst int
	// MaxMemory caps the bytes of cells and stream data queued in the
	// relay (default DefaultMaxMemory); beyond it the circuits holding
	// the most are closed.
	MaxMemory int64
	// DrainTimeout is how long Run lets circuits finish after ctx is
	// done before closing every link (default 0: close at once).
	DrainTimeout time.Duration
	// IdleLinkTimeout closes a link that has carried no circuit and no
	// cell for this long (default DefaultIdleLinkTimeout; negative:
	// never), so idle links do not pile up.
	IdleLinkTimeout time.Duration
	// KeyReleasePeriod: a circuit that carried no cell for a whole
	// period drops its expanded layer keys (default
	// DefaultKeyReleasePeriod; negative: never).
	KeyReleasePeriod time.Duration
	// DataDir, if set, keeps rotated onion keys (onion.key, and
	// onion.key.prev during the overlap).
	DataDir string
	// OnionKeyRotation is how often the onion key is replaced (0: never);
	// the previous key is still accepted for OnionKeyOverlap (default
	// DefaultOnionKeyOverlap).
	OnionKeyRotation, OnionKeyOverlap time.Duration
	// PrevOnionKey is the previous onion key and PrevOnionKeyRetired when
	// it was replaced (Keys.PrevOnion, Keys.PrevOnionRetired); it is
	// accepted until PrevOnionKeyRetired + OnionKeyOverlap.
	PrevOnionKey        *crypto.OnionKey
	PrevOnionKeyRetired time.Time
	// OnionKeyCreated is when OnionKey was made (for the rotation
	// schedule); zero means now.
	OnionKeyCreated time.Time
	// Metrics receives the relay's metrics; nil makes a private set.
	Metrics *metrics.Metrics
}

// Limits and defaults.
const (
	MaxCircuitsPerLink = 4096
	// DefaultMaxInboundLinks bounds accepted links, handshakes included.
	DefaultMaxInboundLinks    = 8192
	DefaultMaxLinksPerAddress = 64
	DefaultCreateRate         = 20
	DefaultCreateBurst        = 200
	DefaultMaxMemory          = 512 << 20
	DefaultOnionKeyOverlap    = 24 * time.Hour
	ConnectTimeout            = 15 * time.Second
	ResolveTimeout            = 10 * time.Second
	// CreateTimeout bounds how long a fragmented CREATE may take to
	// arrive in full.
	CreateTimeout = 10 * time.Second
	// ExtendTimeout bounds the wait for the next hop's CREATED.
	ExtendTimeout = 30 * time.Second
)

var (
	// ErrConfig reports an unusable Config.
	ErrConfig = errors.New("relay: bad config")
	// errShuttingDown is returned for work refused during shutdown.
	errShuttingDown = errors.New("relay: shutting down")
)

// Relay is a running relay.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	id      [32]byte
	metrics *metrics.Metrics
	dialer  net.Dialer
	dns     *exitdns.Cache
	bw      *bandwidth
	perAddr *addrCounter
	creates *createLimiter
	policy  atomic.Pointer[directory.ExitPolicy]
	onions  atomic.Pointer[[]*crypto.OnionKey] // current first
	known   atomic.Pointer[map[[32]byte]bool]  // link keys of relays in the consensus
	queued  atomic.Int64                       // bytes queued in the whole relay
	oomKick chan struct{}
	changed chan struct{} // the descriptor changed: upload it

	draining atomic.Bool
	abort    chan struct{} // closed by Abort
	abortMu  sync.Once
	keyMu    sync.Mutex // onion key rotation state
	onionAt  time.Time
	prevAt   time.Time // when the previous onion key stops being accepted

	mu      sync.Mutex
	links   map[*linkio.Conn]*linkState
	byKey   map[[32]byte]*linkState // canonical link per peer link key
	dialing map[[32]byte]*dialCall
	circs   map[*circEntry]struct{}
	wg      sync.WaitGroup
	ctx     context.Context
	closed  bool
}

// New checks cfg and returns a relay ready to Run.
func New(cfg Config) (*Relay, error) {
	if len(cfg.Identity) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: identity key missing", ErrConfig)
	}
	if cfg.OnionKey == nil {
		return nil, fmt.Errorf("%w: onion key missing", ErrConfig)
	}
	if cfg.Listener == nil || cfg.Network == nil {
		return nil, fmt.Errorf("%w: listener and network file are required", ErrConfig)
	}
	if !cfg.Advertise.IsValid() {
		return nil, fmt.Errorf("%w: advertised address missing", ErrConfig)
	}
	if cfg.BandwidthRate < 0 || cfg.BandwidthBurst < 0 || cfg.Bandwidth < 0 || cfg.CreateRate < 0 || cfg.CreateBurst < 0 || cfg.MaxMemory < 0 {
		return nil, fmt.Errorf("%w: negative limit", ErrConfig)
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
	if cfg.UploadInterval == 0 {
		cfg.UploadInterval = 10 * time.Minute
	}
	if cfg.ConsensusInterval == 0 {
		cfg.ConsensusInterval = 10 * time.Second
	}
	if cfg.KeyReleasePeriod == 0 {
		cfg.KeyReleasePeriod = DefaultKeyReleasePeriod
	}
	if cfg.IdleLinkTimeout == 0 {
		cfg.IdleLinkTimeout = DefaultIdleLinkTimeout
	}
	if cfg.MaxInboundLinks == 0 {
		cfg.MaxInboundLinks = DefaultMaxInboundLinks
	}
	if cfg.MaxLinksPerAddress == 0 {
		cfg.MaxLinksPerAddress = DefaultMaxLinksPerAddress
	}
	if cfg.CreateRate == 0 {
		cfg.CreateRate = DefaultCreateRate
	}
	if cfg.CreateBurst == 0 {
		cfg.CreateBurst = DefaultCreateBurst
	}
	if cfg.MaxMemory == 0 {
		cfg.MaxMemory = DefaultMaxMemory
	}
	if cfg.DNSTimeout == 0 {
		cfg.DNSTimeout = ResolveTimeout
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = ConnectTimeout
	}
	if cfg.OnionKeyOverlap == 0 {
		cfg.OnionKeyOverlap = DefaultOnionKeyOverlap
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.DNS == nil {
		res := cfg.Resolver
		if res == nil {
			res = net.DefaultResolver
		}
		cfg.DNS = exitdns.System(res)
	}
	r := &Relay{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: cfg.Metrics,
		perAddr: newAddrCounter(cfg.MaxLinksPerAddress),
		creates: newCreateLimiter(cfg.CreateRate, cfg.CreateBurst),
		oomKick: make(chan struct{}, 1),
		changed: make(chan struct{}, 1),
		abort:   make(chan struct{}),
		links:   make(map[*linkio.Conn]*linkState),
		byKey:   make(map[[32]byte]*linkState),
		dialing: make(map[[32]byte]*dialCall),
		circs:   make(map[*circEntry]struct{}),
	}
	if cfg.DNSCacheSize >= 0 {
		r.dns = exitdns.NewCache(cfg.DNSCacheSize)
	}
	r.bw = newBandwidth(cfg.BandwidthRate, cfg.BandwidthBurst, cfg.Now, cfg.Metrics)
	cfg.Metrics.SetQueued(r.queued.Load)
	r.policy.Store(cfg.ExitPolicy)
	r.initOnionKeys()
	copy(r.id[:], cfg.Identity.Public().(ed25519.PublicKey))
	r.dialer.Timeout = cfg.ConnectTimeout
	return r, nil
}

// ID is the relay's identity key.
func (r *Relay) ID() directory.RelayID { return directory.RelayID(r.id) }

// Metrics are the relay's metrics (serve Metrics().Handler() on a
// loopback address).
func (r *Relay) Metrics() *metrics.Metrics { return r.metrics }

// advertisedBandwidth is what the descriptor publishes.
func (r *Relay) advertisedBandwidth() int64 {
	bw := r.cfg.Bandwidth
	if rate := r.bwRate(); rate > 0 && (bw == 0 || rate < bw) {
		bw = rate
	}
	return min(bw, directory.MaxBandwidth)
}

func (r *Relay) bwRate() int64 {
	if l := r.bw.lim.Load(); l != nil {
		return int64(l.Limit())
	}
	return 0
}

// Descriptor returns the relay's current signed descriptor.
func (r *Relay) Descriptor() ([]byte, error) {
	onion := r.currentOnionKey()
	d := directory.Descriptor{
		Nickname:   r.cfg.Nickname,
		Identity:   r.cfg.Identity.Public().(ed25519.PublicKey),
		LinkKey:    r.cfg.LinkKey.Public,
		OnionKey:   onion.X25519.Public,
		OnionKeyPQ: onion.KEMPublic[:],
		Address:    r.cfg.Advertise,
		DirAddress: r.cfg.DirAddress,
		Bandwidth:  r.advertisedBandwidth(),
		Family:     r.cfg.Family,
		Contact:    r.cfg.Contact,
		ExitPolicy: r.policy.Load(),
		Platform:   "veil",
		Published:  r.cfg.Now(),
	}
	return d.Sign(r.cfg.Identity)
}

// SetBandwidth changes the bandwidth limit (bytes per second, bytes; 0
// means unlimited) and republishes the descriptor.
func (r *Relay) SetBandwidth(rate, burst int64) {
	r.bw.set(rate, burst)
	r.descriptorChanged()
}

// SetExitPolicy changes the exit policy (nil: not an exit) for new
// streams and republishes the descriptor. Open streams are not affected.
func (r *Relay) SetExitPolicy(p *directory.ExitPolicy) {
	r.policy.Store(p)
	r.descriptorChanged()
}

func (r *Relay) descriptorChanged() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Run serves links and keeps the descriptor uploaded until ctx is done.
// Then it stops accepting links and circuits, lets open circuits finish
// for up to DrainTimeout, closes every link and waits for its goroutines.
func (r *Relay) Run(ctx context.Context) error {
	// inner outlives ctx by the drain: circuits keep extending and
	// streams keep connecting while they finish.
	inner, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	r.mu.Lock()
	if r.ctx != nil {
		r.mu.Unlock()
		return errors.New("relay: Run called twice")
	}
	r.ctx = inner
	r.mu.Unlock()

	r.spawn(func() { r.uploadLoop(ctx) })
	r.spawn(func() { r.consensusLoop(ctx) })
	r.spawn(func() { r.oomLoop(inner) })
	r.spawn(func() { r.rotateLoop(ctx) })
	r.spawn(func() { r.idleLoop(inner) })
	r.spawn(func() { r.keyReleaseLoop(inner) })
	listeners := append([]net.Listener{r.cfg.Listener}, r.cfg.Listeners...)
	slots := make(chan struct{}, r.cfg.MaxInboundLinks)
	errs := make(chan error, len(listeners))
	var acceptors sync.WaitGroup
	for _, ln := range listeners {
		acceptors.Add(1)
		go func() {
			defer acceptors.Done()
			errs <- r.acceptLoop(ctx, ln, slots)
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs: // a listener failed: shut down
	}
	r.draining.Store(true)
	for _, ln := range listeners {
		ln.Close()
	}
	acceptors.Wait()
	r.drain(ctx.Err() != nil)
	cancel()
	r.mu.Lock()
	r.closed = true
	for l := range r.links {
		l.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("relay: accepting links: %w", err)
	}
	return nil
}

// drain waits up to DrainTimeout for the circuits to close.
func (r *Relay) drain(graceful bool) {
	if !graceful || r.cfg.DrainTimeout <= 0 {
		return
	}
	n := r.circuitCount()
	if n == 0 {
		return
	}
	r.log.Info("draining circuits", "circuits", n, "timeout", r.cfg.DrainTimeout)
	deadline := time.NewTimer(r.cfg.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for r.circuitCount() > 0 {
		select {
		case <-deadline.C:
			r.log.Info("drain timeout: closing remaining circuits", "circuits", r.circuitCount())
			return
		case <-r.abort:
			return
		case <-tick.C:
		}
	}
}

// Abort ends a drain in progress (or the next one) at once: Run then
// closes every link without waiting for circuits to finish.
func (r *Relay) Abort() { r.abortMu.Do(func() { close(r.abort) }) }

func (r *Relay) circuitCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.circs)
}

// acceptLoop accepts connections on ln until it fails or is closed.
func (r *Relay) acceptLoop(ctx context.Context, ln net.Listener, slots chan struct{}) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors for a moment
				continue
			}
			return err
		}
		select {
		case slots <- struct{}{}:
		default:
			r.metrics.Refuse(metrics.RefuseInboundLinks)
			r.log.Debug("refusing link: inbound link limit reached")
			nc.Close()
			continue
		}
		addr := remoteAddr(nc.RemoteAddr())
		if !r.perAddr.Acquire(addr) {
			<-slots
			r.metrics.Refuse(metrics.RefuseLinksPerAddress)
			r.log.Debug("refusing link: too many links from one address", "addr", r.sensitive(addr))
			nc.Close()
			continue
		}
		if !r.spawn(func() {
			defer func() { <-slots }()
			counted := true
			defer func() {
				if counted {
					r.perAddr.Release(addr)
				}
			}()
			link, err := linkio.Accept(nc, &r.cfg.LinkKey, r.cfg.Rand)
			r.metrics.Handshake("link", err == nil)
			if err != nil {
				r.log.Debug("link handshake failed", "err", r.safeErr(err))
				return
			}
			if r.isKnownRelay(link.PeerStatic()) {
				// Relays of the consensus are not held to the per-address
				// limit (several may share an address).
				r.perAddr.Release(addr)
				counted = false
			}
			r.serveLink(link, false)
		}) {
			<-slots
			r.perAddr.Release(addr)
			nc.Close()
		}
	}
}

// spawn runs f in a goroutine Run waits for; false if shutting down.
func (r *Relay) spawn(f func()) bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		f()
	}()
	return true
}

func remoteAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (r *Relay) isKnownRelay(linkKey [32]byte) bool {
	m := r.known.Load()
	return m != nil && (*m)[linkKey]
}
