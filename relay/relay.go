// Package relay is the relay node: it accepts links, keeps the circuit
// table, extends circuits to other relays, and, as an exit, resolves host
// names, enforces its exit policy and connects to targets. The protocol
// logic lives in package circuit; this package is its real driver over
// TCP with goroutines.
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
	"time"

	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
	"github.com/veilnet/veil/internal/linkio"
)

// Config configures a relay.
type Config struct {
	Nickname  string
	Identity  ed25519.PrivateKey
	LinkKey   crypto.StaticKey
	OnionKey  *crypto.OnionKey
	Listener  net.Listener   // accepts links
	Advertise netip.AddrPort // the address published in the descriptor
	Bandwidth int64          // advertised bytes per second
	// ExitPolicy is published and enforced; nil means a non-exit.
	ExitPolicy *directory.ExitPolicy
	// AllowPrivateExit lets the exit connect to private and loopback
	// addresses. Only a private test network sets it; never a default.
	AllowPrivateExit bool
	// ExtendAllowPrivate lets the relay extend circuits to relays on
	// private and loopback addresses. Only a private test network sets it.
	ExtendAllowPrivate bool
	Network            *directory.Network
	// UploadInterval is how often the descriptor is uploaded again.
	UploadInterval time.Duration
	Logger         *slog.Logger
	Rand           io.Reader
	// Resolver resolves exit host names; nil uses net.DefaultResolver.
	Resolver *net.Resolver
	Now      func() time.Time
	// MaxInboundLinks bounds accepted links, handshakes included
	// (default DefaultMaxInboundLinks); beyond it new connections are
	// closed at once.
	MaxInboundLinks int
}

// Limits.
const (
	MaxCircuitsPerLink = 4096
	// DefaultMaxInboundLinks bounds accepted links, handshakes included.
	DefaultMaxInboundLinks = 8192
	ConnectTimeout         = 15 * time.Second
	ResolveTimeout         = 10 * time.Second
)

// Relay is a running relay.
type Relay struct {
	cfg    Config
	log    *slog.Logger
	id     [32]byte
	onions []*crypto.OnionKey
	dialer net.Dialer

	mu     sync.Mutex
	links  map[*linkio.Conn]*linkState
	byKey  map[[32]byte]*linkio.Conn // canonical outgoing links by peer link key
	wg     sync.WaitGroup
	ctx    context.Context
	closed bool
}

// New checks cfg and returns a relay ready to Run.
func New(cfg Config) (*Relay, error) {
	if len(cfg.Identity) != ed25519.PrivateKeySize {
		return nil, errors.New("relay: identity key missing")
	}
	if cfg.OnionKey == nil {
		return nil, errors.New("relay: onion key missing")
	}
	if cfg.Listener == nil || cfg.Network == nil {
		return nil, errors.New("relay: listener and network file are required")
	}
	if !cfg.Advertise.IsValid() {
		return nil, errors.New("relay: advertised address missing")
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
	if cfg.MaxInboundLinks == 0 {
		cfg.MaxInboundLinks = DefaultMaxInboundLinks
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	r := &Relay{
		cfg:    cfg,
		log:    cfg.Logger,
		onions: []*crypto.OnionKey{cfg.OnionKey},
		links:  make(map[*linkio.Conn]*linkState),
		byKey:  make(map[[32]byte]*linkio.Conn),
	}
	copy(r.id[:], cfg.Identity.Public().(ed25519.PublicKey))
	r.dialer.Timeout = ConnectTimeout
	return r, nil
}

// ID is the relay's identity key.
func (r *Relay) ID() directory.RelayID { return directory.RelayID(r.id) }

// Descriptor returns the relay's current signed descriptor.
func (r *Relay) Descriptor() ([]byte, error) {
	d := directory.Descriptor{
		Nickname:   r.cfg.Nickname,
		Identity:   r.cfg.Identity.Public().(ed25519.PublicKey),
		LinkKey:    r.cfg.LinkKey.Public,
		OnionKey:   r.cfg.OnionKey.X25519.Public,
		OnionKeyPQ: r.cfg.OnionKey.KEMPublic[:],
		Address:    r.cfg.Advertise,
		Bandwidth:  r.cfg.Bandwidth,
		ExitPolicy: r.cfg.ExitPolicy,
		Platform:   "veil",
		Published:  r.cfg.Now(),
	}
	return d.Sign(r.cfg.Identity)
}

// Run serves links and keeps the descriptor uploaded until ctx is done,
// then closes every link and waits for its goroutines.
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()

	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.uploadLoop(ctx)
	}()
	go func() {
		<-ctx.Done()
		r.cfg.Listener.Close()
	}()
	var err error
	slots := make(chan struct{}, r.cfg.MaxInboundLinks)
	for {
		var nc net.Conn
		nc, err = r.cfg.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				continue // e.g. out of file descriptors for a moment
			}
			break
		}
		select {
		case slots <- struct{}{}:
		default:
			r.log.Debug("refusing link: inbound link limit reached")
			nc.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer func() { <-slots }()
			defer r.wg.Done()
			link, err := linkio.Accept(nc, &r.cfg.LinkKey, r.cfg.Rand)
			if err != nil {
				r.log.Debug("link handshake failed", "err", err)
				return
			}
			r.serveLink(link)
		}()
	}
	cancel()
	r.mu.Lock()
	r.closed = true
	for l := range r.links {
		l.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("relay: accepting links: %w", err)
}

// uploadLoop uploads the descriptor to every authority now and then every
// UploadInterval, retrying failed authorities sooner.
func (r *Relay) uploadLoop(ctx context.Context) {
	retry := time.Second
	for {
		failed := r.uploadOnce(ctx)
		wait := r.cfg.UploadInterval
		if failed > 0 {
			wait = retry
			retry = min(retry*2, r.cfg.UploadInterval)
		} else {
			retry = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (r *Relay) uploadOnce(ctx context.Context) (failed int) {
	desc, err := r.Descriptor()
	if err != nil {
		r.log.Error("signing descriptor", "err", err)
		return len(r.cfg.Network.Authorities)
	}
	for _, a := range r.cfg.Network.Authorities {
		uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := dirclient.UploadDescriptor(uctx, a.Address, desc)
		cancel()
		if err != nil {
			failed++
			r.log.Warn("descriptor upload failed", "authority", a.Name, "err", err)
		} else {
			r.log.Debug("descriptor uploaded", "authority", a.Name)
		}
	}
	return failed
}
