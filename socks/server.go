package socks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Dialer opens a stream through the anonymity network. host is a hostname or
// an IP literal exactly as the application sent it (never resolved locally);
// isolation is an opaque key derived from the SOCKS username and password
// ("" when the client did not authenticate): streams with different keys must
// never share a circuit (the client enforces that).
//
// DialStream must return when ctx is done. Its error chooses the SOCKS5 reply
// (see ReplyCodeFor): wrap ErrRefused, ErrNotAllowed, ErrHostUnreachable, ...
// The returned conn should implement CloseWrite() error if the stream can be
// half-closed; its LocalAddr is never used.
type Dialer interface {
	DialStream(ctx context.Context, isolation string, host string, port uint16) (net.Conn, error)
}

// Defaults for the zero values in Config.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultConnectTimeout   = 2 * time.Minute // Tor's SocksTimeout
	DefaultMaxConns         = 1024
)

// Config configures a Server.
type Config struct {
	Addr             string // listen address, e.g. "127.0.0.1:9050"; "localhost" means 127.0.0.1
	AllowNonLoopback bool   // refuse a non-loopback listen address unless true (DESIGN property 8)
	Dialer           Dialer
	Logger           *slog.Logger // nil = discard; destinations are never logged at Info or above

	// HandshakeTimeout bounds the SOCKS negotiation, from accept until the
	// request is read, and separately the write of the reply.
	// Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// ConnectTimeout bounds Dialer.DialStream; when it expires the client
	// gets TTL expired (0x06). Zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxConns bounds concurrent client connections; a connection beyond it
	// is closed as soon as it is accepted. Zero means DefaultMaxConns.
	MaxConns int
}

// Server is a SOCKS5 proxy bound to a listener.
type Server struct {
	cfg  Config
	log  *slog.Logger
	s5   *log.Logger // go-socks5's logger: discards everything
	ln   net.Listener
	sem  chan struct{} // one token per live client connection
	wg   sync.WaitGroup
	life context.Context // cancelled by Close
	stop context.CancelFunc

	serving   atomic.Bool
	limited   atomic.Bool   // the last connection was refused for MaxConns
	panics    atomic.Uint64 // panics recovered at the trust boundary
	lnOnce    sync.Once
	lnErr     error
	closeOnce sync.Once

	mu       sync.Mutex
	sessions map[*session]struct{}
	closing  bool
}

var errServing = errors.New("socks: Serve called more than once")

// Listen validates cfg, applies defaults and binds the listener. It refuses
// a non-loopback address (or a hostname other than "localhost") with
// ErrNotLoopback unless cfg.AllowNonLoopback, checking both the address asked
// for, before binding, and the address actually bound.
func Listen(cfg Config) (*Server, error) {
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	addr, err := listenAddr(s.cfg.Addr, s.cfg.AllowNonLoopback)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("socks: listen: %w", err)
	}
	if !s.cfg.AllowNonLoopback && !isLoopback(ln.Addr()) {
		ln.Close()
		return nil, ErrNotLoopback
	}
	s.ln = ln
	return s, nil
}

// newServer checks cfg and fills in defaults; it does not bind.
func newServer(cfg Config) (*Server, error) {
	if cfg.Dialer == nil {
		return nil, errors.New("socks: Config.Dialer is nil")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	life, stop := context.WithCancel(context.Background())
	return &Server{
		cfg:      cfg,
		log:      lg,
		s5:       log.New(io.Discard, "", 0),
		sem:      make(chan struct{}, cfg.MaxConns),
		life:     life,
		stop:     stop,
		sessions: make(map[*session]struct{}),
	}, nil
}

// listenAddr returns the address to bind, or ErrNotLoopback. "localhost" is
// bound as 127.0.0.1 so that choosing the listen address needs no lookup.
func listenAddr(addr string, allowNonLoopback bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("socks: listen address: %w", err)
	}
	if strings.EqualFold(host, "localhost") {
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	if allowNonLoopback {
		return addr, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() { // "" (all interfaces) and other names fail here
		return "", ErrNotLoopback
	}
	return addr, nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts connections until ctx is done, Close is called or the
// listener fails. When it returns, the listener and every client connection
// and stream are closed and every goroutine it started has ended. It returns
// nil when stopped by ctx or Close, otherwise the listener's error. It may be
// called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errServing
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The watcher closes the listener, which ends the accept loop, when ctx
	// is done or Close is called.
	acceptDone := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		select {
		case <-ctx.Done():
		case <-s.life.Done():
		case <-acceptDone:
		}
		cancel()
		s.closeListener()
	}()

	err := s.acceptLoop(ctx)
	close(acceptDone)
	watcher.Wait()
	s.abortAll()
	s.wg.Wait()
	return err
}

// Close stops the server: it closes the listener and makes Serve close every
// client connection and return. It does not wait for Serve to return.
func (s *Server) Close() error {
	s.closeOnce.Do(s.stop)
	return s.closeListener()
}

func (s *Server) closeListener() error {
	s.lnOnce.Do(func() { s.lnErr = s.ln.Close() })
	return s.lnErr
}

// Accept errors that are worth waiting out (descriptor or memory exhaustion).
func transientAcceptError(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func (s *Server) acceptLoop(ctx context.Context) error {
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !transientAcceptError(err) {
				return fmt.Errorf("socks: accept: %w", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("socks: accept failed; retrying", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		backoff = 0
		select {
		case s.sem <- struct{}{}:
			s.limited.Store(false)
		default:
			c.Close()
			if !s.limited.Swap(true) {
				s.log.Warn("socks: connection limit reached; closing new connections", "max", s.cfg.MaxConns)
			}
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			s.serveConn(ctx, c)
		}()
	}
}

// serveConn runs one client connection to the end and closes it. It never
// panics: a panic anywhere below (go-socks5 included) is recovered here.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	ss := newSession(s, c)
	if !s.track(ss) {
		ss.close()
		return
	}
	defer s.untrack(ss)
	defer ss.close()
	defer s.recoverPanic(ss)
	ss.run(ctx)
}

func (s *Server) recoverPanic(ss *session) {
	if r := recover(); r != nil {
		s.panics.Add(1)
		ss.close()
		s.log.Error("socks: recovered a panic while serving a client; connection closed")
		s.log.Debug("socks: panic", "value", r)
	}
}

func (s *Server) track(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[ss] = struct{}{}
	return true
}

func (s *Server) untrack(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

// abortAll closes every live client connection and stream and refuses new ones.
func (s *Server) abortAll() {
	s.mu.Lock()
	s.closing = true
	live := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		live = append(live, ss)
	}
	s.mu.Unlock()
	for _, ss := range live {
		ss.close()
	}
}
