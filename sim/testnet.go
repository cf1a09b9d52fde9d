// Package sim runs whole veil networks on one machine: Testnet starts a
// live network on loopback in one process (authorities, relays, a client
// with a SOCKS port); the virtual-time simulator comes later.
package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay"
	"github.com/veilnet/veil/relay/authority"
	"github.com/veilnet/veil/socks"
)

// TestnetConfig describes a private network on loopback.
type TestnetConfig struct {
	// Dir keeps keys and the network file; empty means a temporary
	// directory removed on Close.
	Dir         string
	Authorities int // default 3
	Relays      int // default 6
	Exits       int // default: a third of the relays, at least 2
	// SocksAddr is the client's SOCKS5 listen address; "" means no client.
	SocksAddr string
	// VotingInterval is the consensus period (default 10s; seconds so a
	// testnet is usable at once).
	VotingInterval time.Duration
	Logger         *slog.Logger
	// Progress, if set, receives one line per step.
	Progress func(string)
}

// Testnet is a running private network.
type Testnet struct {
	Network   *directory.Network
	Dir       string
	Client    *client.Client
	Socks     *socks.Server
	RelayAddr []netip.AddrPort

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	tmp     bool
	errMu   sync.Mutex
	errs    []error
	closers []io.Closer
}

func (c *TestnetConfig) defaults() {
	if c.Authorities == 0 {
		c.Authorities = 3
	}
	if c.Relays == 0 {
		c.Relays = 6
	}
	if c.Exits == 0 {
		c.Exits = max(2, c.Relays/3)
	}
	if c.VotingInterval == 0 {
		c.VotingInterval = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
}

// relayAddr gives relay i its own loopback /16 (127.i+1.0.1): Linux routes
// all of 127.0.0.0/8 to lo, so path selection's subnet rule works as it
// would on the internet.
func relayAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, byte(i + 1), 0, 1}) }

// StartTestnet starts the network and, if cfg.SocksAddr is set, a client
// whose SOCKS port is ready when it returns.
func StartTestnet(ctx context.Context, cfg TestnetConfig) (*Testnet, error) {
	cfg.defaults()
	if cfg.Relays < 3 || cfg.Relays > 250 || cfg.Exits > cfg.Relays || cfg.Authorities < 1 || cfg.Authorities > 9 {
		return nil, errors.New("sim: testnet needs 3..250 relays, exits <= relays, 1..9 authorities")
	}
	tn := &Testnet{Dir: cfg.Dir}
	if tn.Dir == "" {
		d, err := os.MkdirTemp("", "veil-testnet-")
		if err != nil {
			return nil, err
		}
		tn.Dir, tn.tmp = d, true
	}
	runCtx, cancel := context.WithCancel(context.Background())
	tn.cancel = cancel
	ok := false
	defer func() {
		if !ok {
			tn.Close()
		}
	}()

	// Authorities: keys, listeners, then the network file naming them.
	type authNode struct {
		id ed25519.PrivateKey
		ln net.Listener
	}
	var auths []authNode
	network := &directory.Network{Name: "testnet"}
	for i := range cfg.Authorities {
		id, err := crypto.LoadOrCreateIdentity(filepath.Join(tn.Dir, fmt.Sprintf("authority%d", i+1), "identity.key"), rand.Reader)
		if err != nil {
			return nil, err
		}
		ln, err := listen("127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		tn.closers = append(tn.closers, ln)
		auths = append(auths, authNode{id, ln})
		network.Authorities = append(network.Authorities, directory.AuthorityInfo{
			Name: fmt.Sprintf("auth%d", i+1), Address: ln.Addr().String(), Identity: id.Public().(ed25519.PublicKey)})
	}
	tn.Network = network
	if err := os.WriteFile(filepath.Join(tn.Dir, "network.toml"), network.Encode(), 0o644); err != nil {
		return nil, err
	}
	cfg.Progress(fmt.Sprintf("network file written to %s", filepath.Join(tn.Dir, "network.toml")))
	var running []*authority.Authority
	for i, a := range auths {
		au, err := authority.New(authority.Config{
			Identity: a.id, Network: network, Name: network.Authorities[i].Name, Listener: a.ln,
			Interval: cfg.VotingInterval, VoteDelay: cfg.VotingInterval / 5, SigDelay: cfg.VotingInterval / 5,
			// Every relay of a test network is young: without this only the
			// older half would ever be Stable and Guard.
			TestingAllFlags: true,
			// The first consensus comes as soon as every relay passed its
			// reachability test, not at the next aligned round.
			EarlyRelays: cfg.Relays,
			Logger:      cfg.Logger.With("node", network.Authorities[i].Name),
		})
		if err != nil {
			return nil, err
		}
		running = append(running, au)
		tn.run(runCtx, "authority", au.Run)
	}
	cfg.Progress(fmt.Sprintf("%d authorities started", cfg.Authorities))

	for i := range cfg.Relays {
		r, err := newTestnetRelay(tn.Dir, i, i < cfg.Exits, network, cfg.Logger)
		if err != nil {
			return nil, err
		}
		tn.RelayAddr = append(tn.RelayAddr, r.advertise)
		tn.run(runCtx, "relay", r.relay.Run)
	}
	cfg.Progress(fmt.Sprintf("%d relays started (%d exits), waiting for the first consensus", cfg.Relays, cfg.Exits))

	if cfg.SocksAddr == "" {
		ok = true
		return tn, nil
	}
	// A client that asks before the first consensus waits a second
	// before asking again: start it once there is one.
	if err := waitConsensus(ctx, running); err != nil {
		return nil, err
	}
	cfg.Progress("first consensus published")
	cl, err := client.New(client.Config{Network: network, Logger: cfg.Logger.With("node", "client"),
		Progress: func(pct int, what string) { cfg.Progress(fmt.Sprintf("client bootstrapped %d%%: %s", pct, what)) }})
	if err != nil {
		return nil, err
	}
	tn.Client = cl
	tn.closers = append(tn.closers, cl)
	if err := cl.Bootstrap(ctx); err != nil {
		return nil, err
	}
	srv, err := socks.Listen(socks.Config{Addr: cfg.SocksAddr, Dialer: socks.ClientDialer(cl), Logger: cfg.Logger.With("node", "socks")})
	if err != nil {
		return nil, err
	}
	tn.Socks = srv
	tn.run(runCtx, "socks", srv.Serve)
	ok = true
	return tn, nil
}

// waitConsensus waits until one of auths serves a consensus.
func waitConsensus(ctx context.Context, auths []*authority.Authority) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		for _, a := range auths {
			if a.HasConsensus() {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sim: waiting for the first consensus: %w", ctx.Err())
		case <-t.C:
		}
	}
}

type testnetRelay struct {
	relay     *relay.Relay
	advertise netip.AddrPort
}

func newTestnetRelay(dir string, i int, exit bool, network *directory.Network, log *slog.Logger) (*testnetRelay, error) {
	rdir := filepath.Join(dir, fmt.Sprintf("relay%d", i+1))
	keys, err := relay.LoadOrCreateKeys(rdir, rand.Reader)
	if err != nil {
		return nil, err
	}
	ln, err := listen(netip.AddrPortFrom(relayAddr(i), 0).String())
	if err != nil {
		return nil, err
	}
	adv := ln.Addr().(*net.TCPAddr).AddrPort()
	policy := directory.RejectAllPolicy()
	if exit {
		if policy, err = directory.ParseExitPolicy("accept *:*"); err != nil {
			return nil, err
		}
	}
	r, err := relay.New(relay.Config{
		Nickname: fmt.Sprintf("relay%d", i+1), Identity: keys.Identity, LinkKey: keys.Link, OnionKey: keys.Onion,
		Listener: ln, Advertise: adv, Bandwidth: int64(1+i%4) * 10 << 20, ExitPolicy: policy,
		AllowPrivateExit:   exit, // a private test network: exits may reach loopback
		ExtendAllowPrivate: true, // and every relay lives on loopback
		Network:            network, UploadInterval: time.Minute, Logger: log.With("node", fmt.Sprintf("relay%d", i+1)),
		// A private network's exits resolve only localhost names: no
		// test or demo ever sends a DNS query off the machine.
		DNS: LoopbackResolver{},
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &testnetRelay{relay: r, advertise: adv}, nil
}

func listen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(context.Background(), "tcp", addr)
}

func (tn *Testnet) run(ctx context.Context, what string, f func(context.Context) error) {
	tn.wg.Add(1)
	go func() {
		defer tn.wg.Done()
		if err := f(ctx); err != nil && ctx.Err() == nil {
			tn.errMu.Lock()
			tn.errs = append(tn.errs, fmt.Errorf("%s: %w", what, err))
			tn.errMu.Unlock()
		}
	}()
}

// Close stops every node and waits for them. A temporary directory is
// removed.
func (tn *Testnet) Close() error {
	tn.cancel()
	for _, c := range tn.closers {
		c.Close()
	}
	tn.wg.Wait()
	if tn.tmp {
		os.RemoveAll(tn.Dir)
	}
	tn.errMu.Lock()
	defer tn.errMu.Unlock()
	return errors.Join(tn.errs...)
}

// FileServer serves /file (size random bytes) and a small index page on
// addr, for trying the network with curl. It stops when ctx is done.
func FileServer(ctx context.Context, addr string, size int) (net.Listener, error) {
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		return nil, err
	}
	ln, err := listen(addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(data)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<!doctype html><title>veil testnet</title><h1>Hello through veil</h1><p><a href=\"/file\">a %d-byte random file</a></p>\n", size)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	return ln, nil
}
