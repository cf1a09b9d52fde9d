package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/veilnet/veil/circuit"
)

// begin opens an exit stream: resolve the host here (the client never
// does), check the address actually to be dialed against the exit policy
// and the private-address rule, then connect.
func (r *Relay) begin(ctx context.Context, e *circEntry, b circuit.BeginRequest) {
	conn, reason := r.connectExit(ctx, b.Host, b.Port)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead {
		if conn != nil {
			conn.Close()
		}
		return
	}
	e.acts.Reset()
	if conn == nil {
		if e.rc.StreamEnded(b.StreamID, reason, &e.acts) == nil {
			r.apply(e)
		}
		return
	}
	s := &exitStream{id: b.StreamID, conn: conn, e: e, r: r,
		qready: make(chan struct{}, 1), wakeCh: make(chan struct{}, 1), done: make(chan struct{})}
	e.streams[b.StreamID] = s
	var connected netip.Addr
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		connected = ta.AddrPort().Addr().Unmap()
	}
	if err := e.rc.StreamConnected(b.StreamID, connected, &e.acts); err != nil {
		delete(e.streams, b.StreamID)
		conn.Close()
		return
	}
	r.apply(e)
	r.goCtx(func(context.Context) { s.readLoop() })
	r.goCtx(func(context.Context) { s.writeLoop() })
}

// errExitRefused marks addresses the exit will not connect to.
var errExitRefused = errors.New("relay: exit refuses this address")

func (r *Relay) connectExit(ctx context.Context, host string, port uint16) (net.Conn, circuit.EndReason) {
	policy := r.cfg.ExitPolicy
	if policy == nil || !policy.AllowsPort(port) {
		return nil, circuit.EndExitPolicy
	}
	addrs, err := r.resolve(ctx, host)
	if err != nil {
		return nil, circuit.EndResolveFailed
	}
	var target netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if r.exitAllowed(a, port) == nil {
			target = a
			break
		}
	}
	if !target.IsValid() {
		return nil, circuit.EndExitPolicy
	}
	dctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	conn, err := r.dialer.DialContext(dctx, "tcp", netip.AddrPortFrom(target, port).String())
	if err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return nil, circuit.EndTimeout
		case isRefused(err):
			return nil, circuit.EndConnectRefused
		default:
			return nil, circuit.EndNoRoute
		}
	}
	return conn, 0
}

func (r *Relay) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	rctx, cancel := context.WithTimeout(ctx, ResolveTimeout)
	defer cancel()
	return r.cfg.Resolver.LookupNetIP(rctx, "ip", host)
}

// exitAllowed checks the address the exit would really connect to (after
// DNS, so a name that resolves to 127.0.0.1 is caught like the literal).
func (r *Relay) exitAllowed(a netip.Addr, port uint16) error {
	if !r.cfg.AllowPrivateExit {
		if isPrivate(a) || a == r.cfg.Advertise.Addr() {
			return errExitRefused
		}
	}
	if !r.cfg.ExitPolicy.Allows(a, port) {
		return errExitRefused
	}
	return nil
}

// isPrivate reports addresses no public exit should reach: loopback,
// private ranges, link-local, unspecified, multicast, CGNAT and the like.
func isPrivate(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	for _, p := range reservedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

var reservedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("2002::/16"),
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// exitStream is one TCP connection from the exit to a target.
type exitStream struct {
	id     uint16
	conn   net.Conn
	e      *circEntry
	r      *Relay
	qmu    sync.Mutex
	queue  [][]byte      // client → target; flow control bounds it (maxExitQueue)
	qready chan struct{} // queue became non-empty
	wakeCh chan struct{} // the package window reopened
	once   sync.Once
	done   chan struct{}
}

// deliver queues client data for the target. e.mu is held. The window
// guarantees room; a peer that overruns it loses the stream.
func (s *exitStream) deliver(b []byte) {
	s.qmu.Lock()
	full := len(s.queue) >= maxExitQueue
	if !full {
		s.queue = append(s.queue, b)
	}
	s.qmu.Unlock()
	if full {
		s.close()
		return
	}
	select {
	case s.qready <- struct{}{}:
	default:
	}
}

// maxExitQueue is the most cells a stream's client may have sent and the
// target not yet taken: the XOFF threshold plus what was in flight when the
// client stopped (the circuit layer enforces the same bound).
const maxExitQueue = circuit.XoffCells + circuit.MaxCwnd

func (s *exitStream) wake() {
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

func (s *exitStream) close() {
	s.once.Do(func() {
		close(s.done)
		s.conn.Close()
	})
}

// readLoop moves target bytes into DATA cells as the windows allow.
func (s *exitStream) readLoop() {
	e := s.e
	buf := make([]byte, 32*1024)
	reason := circuit.EndDone
	for {
		n, err := s.conn.Read(buf)
		for off := 0; off < n; {
			e.mu.Lock()
			if e.dead || e.streams[s.id] != s {
				e.mu.Unlock()
				s.close()
				return
			}
			e.acts.Reset()
			m, perr := e.rc.PackageData(s.id, buf[off:n], &e.acts)
			s.r.apply(e)
			e.mu.Unlock()
			if perr != nil {
				s.close()
				return
			}
			off += m
			if off < n {
				select {
				case <-s.wakeCh:
				case <-s.done:
					return
				}
			}
		}
		if err != nil {
			break
		}
	}
	s.close()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.dead && e.streams[s.id] == s {
		delete(e.streams, s.id)
		e.acts.Reset()
		if e.rc.StreamEnded(s.id, reason, &e.acts) == nil {
			s.r.apply(e)
		}
	}
}

// writeLoop writes client bytes to the target and acknowledges them.
func (s *exitStream) writeLoop() {
	e := s.e
	for {
		s.qmu.Lock()
		n := len(s.queue)
		var b []byte
		if n > 0 {
			b = s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
		}
		s.qmu.Unlock()
		if n == 0 {
			select {
			case <-s.done:
				return
			case <-s.qready:
			}
			continue
		}
		if _, err := s.conn.Write(b); err != nil {
			s.close()
			return
		}
		e.mu.Lock()
		if !e.dead {
			e.acts.Reset()
			if e.rc.StreamConsumed(s.id, 1, &e.acts) == nil {
				s.r.apply(e)
			}
		}
		e.mu.Unlock()
	}
}
