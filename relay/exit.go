package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay/exitdns"
	"github.com/veilnet/veil/relay/metrics"
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
	var acts circuit.RelayActions
	if conn == nil {
		if e.rc.StreamEnded(b.StreamID, reason, &acts) == nil {
			r.apply(e, &acts)
		}
		return
	}
	if e.streams[b.StreamID] != nil {
		// An earlier BEGIN with this ID, ended and sent again while both
		// were connecting, already holds the stream: this connection
		// belongs to no stream.
		conn.Close()
		return
	}
	var connected netip.Addr
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		connected = ta.AddrPort().Addr().Unmap()
	}
	// StreamConnected sends CONNECTED only for a stream the circuit still
	// has; if the client ended it while we connected, nothing goes out and
	// the connection must not be kept (it would escape
	// MaxStreamsPerCircuit and outlive the circuit).
	if err := e.rc.StreamConnected(b.StreamID, connected, &acts); err != nil || len(acts.ToPrev) == 0 {
		conn.Close()
		return
	}
	s := &exitStream{id: b.StreamID, conn: conn, e: e, r: r,
		qready: make(chan struct{}, 1), wakeCh: make(chan struct{}, 1), done: make(chan struct{})}
	if e.streams == nil { // made on the first stream: most circuits are not exit circuits
		e.streams = make(map[uint16]*exitStream)
	}
	e.streams[b.StreamID] = s
	r.metrics.Streams.Inc()
	r.apply(e, &acts)
	r.goCtx(func(context.Context) { s.readLoop() })
	r.goCtx(func(context.Context) { s.writeLoop() })
}

// errExitRefused marks addresses the exit will not connect to.
var errExitRefused = errors.New("relay: exit refuses this address")

// maxDialAttempts bounds the addresses of one name the exit tries.
const maxDialAttempts = 3

// connectExit resolves host, keeps the addresses the policy allows and
// connects to the first that answers, all within the DNS and connect
// timeouts. On failure it returns the END reason for the client.
func (r *Relay) connectExit(ctx context.Context, host string, port uint16) (net.Conn, circuit.EndReason) {
	targets, reason := r.exitTargets(ctx, host, port)
	if reason != 0 {
		return nil, reason
	}
	dctx, cancel := context.WithTimeout(ctx, r.cfg.ConnectTimeout)
	defer cancel()
	reason = circuit.EndNoRoute
	for _, a := range targets {
		conn, err := r.dialer.DialContext(dctx, "tcp", netip.AddrPortFrom(a, port).String())
		if err == nil {
			return conn, 0
		}
		r.log.Debug("exit connect failed", "target", r.sensitive(a), "err", r.safeErr(err))
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout(), dctx.Err() != nil:
			return nil, circuit.EndTimeout
		case isRefused(err):
			reason = circuit.EndConnectRefused
		default:
			reason = circuit.EndNoRoute
		}
	}
	return nil, reason
}

// exitTargets decides where a BEGIN for host:port may connect: the
// resolved addresses (at most maxDialAttempts) that pass the private-
// address rule and the exit policy, checked on the addresses themselves
// after DNS. Otherwise it returns the END reason.
func (r *Relay) exitTargets(ctx context.Context, host string, port uint16) ([]netip.Addr, circuit.EndReason) {
	policy := r.policy.Load()
	if policy == nil || !policy.AllowsPort(port) {
		r.metrics.Refuse(metrics.RefuseExitPolicy)
		return nil, circuit.EndExitPolicy
	}
	addrs, err := r.resolve(ctx, host)
	if err != nil {
		r.metrics.Refuse(metrics.RefuseResolve)
		r.log.Debug("exit lookup failed", "host", r.sensitive(host), "err", r.safeErr(err))
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, circuit.EndTimeout
		}
		return nil, circuit.EndResolveFailed
	}
	var targets []netip.Addr
	for _, a := range addrs {
		if a = a.Unmap(); r.exitAllowed(policy, a, port) == nil && len(targets) < maxDialAttempts {
			targets = append(targets, a)
		}
	}
	if len(targets) == 0 {
		r.metrics.Refuse(metrics.RefuseExitPolicy)
		return nil, circuit.EndExitPolicy
	}
	return targets, 0
}

// resolve returns host's addresses: a literal as is, a name from the
// cache or the resolver (within DNSTimeout).
func (r *Relay) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	if !exitdns.ValidName(host) {
		return nil, exitdns.ErrBadName
	}
	now := r.cfg.Now()
	if addrs, ok, err := r.dns.Get(host, now); ok {
		r.metrics.DNSLookups.WithLabelValues("hit").Inc()
		return addrs, err
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.DNSTimeout)
	defer cancel()
	addrs, ttl, err := r.cfg.DNS.Resolve(rctx, host)
	switch {
	case errors.Is(err, exitdns.ErrNotFound):
		r.metrics.DNSLookups.WithLabelValues("miss").Inc()
		r.dns.Put(host, nil, 0, r.cfg.Now())
		return nil, err
	case err == nil && len(addrs) == 0:
		r.metrics.DNSLookups.WithLabelValues("miss").Inc()
		r.dns.Put(host, nil, 0, r.cfg.Now())
		return nil, exitdns.ErrNotFound
	case err != nil:
		r.metrics.DNSLookups.WithLabelValues("failed").Inc()
		if rctx.Err() != nil {
			return nil, context.DeadlineExceeded
		}
		return nil, err
	}
	r.metrics.DNSLookups.WithLabelValues("miss").Inc()
	r.dns.Put(host, addrs, ttl, r.cfg.Now())
	return addrs, nil
}

// exitAllowed checks the address the exit would really connect to (after
// DNS, so a name that resolves to 127.0.0.1 is caught like the literal).
func (r *Relay) exitAllowed(policy *directory.ExitPolicy, a netip.Addr, port uint16) error {
	a = a.Unmap()
	if a.Zone() != "" {
		return errExitRefused
	}
	if !r.cfg.AllowPrivateExit && (isPrivate(a) || r.isOwnAddr(a)) {
		return errExitRefused
	}
	if !policy.Allows(a, port) {
		return errExitRefused
	}
	return nil
}

// isOwnAddr reports the relay's own published and listening addresses.
func (r *Relay) isOwnAddr(a netip.Addr) bool {
	if a == r.cfg.Advertise.Addr().Unmap() || a == r.cfg.DirAddress.Addr().Unmap() {
		return true
	}
	for _, ln := range append([]net.Listener{r.cfg.Listener}, r.cfg.Listeners...) {
		if ln != nil && remoteAddr(ln.Addr()) == a {
			return true
		}
	}
	return false
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
	netip.MustParsePrefix("::/96"),     // IPv4-compatible (deprecated)
	netip.MustParsePrefix("fec0::/10"), // site-local (deprecated)
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// exitStream is one TCP connection from the exit to a target.
type exitStream struct {
	id   uint16
	conn net.Conn
	e    *circEntry
	r    *Relay
	qmu  sync.Mutex
	// qbuf holds the client's bytes for the target, qlens the length of
	// each cell's share of them; flow control bounds the cells
	// (maxExitQueue). The writer swaps them for its spare pair and
	// writes many cells' data per system call.
	qbuf    []byte
	qlens   []uint16
	qready  chan struct{} // queue became non-empty
	wakeCh  chan struct{} // the package window reopened
	closed  bool          // guarded by qmu: the queue is gone
	finIn   bool          // guarded by qmu: the client sent FIN
	finSent bool          // guarded by qmu: the target's write side is shut
	finOut  bool          // guarded by qmu: the target sent EOF; the client got FIN
	once    sync.Once
	done    chan struct{}
	// fullReads counts consecutive reads from the target that filled the
	// buffer (readLoop only).
	fullReads int
}

// deliver queues client data for the target. e.mu is held. The window
// guarantees room; a peer that overruns it loses the stream.
func (s *exitStream) deliver(b []byte) {
	s.qmu.Lock()
	full := len(s.qlens) >= maxExitQueue || s.closed
	if !full {
		s.qbuf = append(s.qbuf, b...) // b is valid only until the actions are reset
		s.qlens = append(s.qlens, uint16(len(b)))
	}
	s.qmu.Unlock()
	if full {
		s.close()
		return
	}
	s.r.account(s.e, int64(len(b)))
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

// close ends the stream's connection and forgets its queued bytes.
func (s *exitStream) close() {
	s.once.Do(func() {
		close(s.done)
		s.conn.Close()
		s.qmu.Lock()
		n := len(s.qbuf)
		s.qbuf, s.qlens, s.closed = nil, nil, true
		s.qmu.Unlock()
		s.r.account(s.e, -int64(n))
		s.r.metrics.Streams.Dec()
	})
}

// exitReadBuf is the first read buffer of an exit stream: small, because
// a busy exit holds thousands of streams and most carry little. A stream
// whose reads keep filling the buffer (4 in a row) is a bulk one: its
// buffer grows, 4 times at a step, to exitReadBufMax, so it takes many
// cells' worth per system call (and per wake-up of the link writer).
const (
	exitReadBuf    = 4096
	exitReadBufMax = 64 << 10
)

// readLoop moves target bytes into DATA cells as the windows allow.
func (s *exitStream) readLoop() {
	e := s.e
	buf := make([]byte, exitReadBuf)
	reason := circuit.EndDone
	var acts circuit.RelayActions // this goroutine's scratch for the circuit's actions
	var w waker                   // the link the cells go to, written after e.mu is released
	for {
		if n := len(buf); n < exitReadBufMax && s.fullReads >= 4 {
			buf, s.fullReads = make([]byte, min(4*n, exitReadBufMax)), 0
		}
		n, err := s.conn.Read(buf)
		if n == len(buf) {
			s.fullReads++
		} else {
			s.fullReads = 0
		}
		if n > 0 {
			s.r.metrics.ExitBytes.WithLabelValues("from_target").Add(float64(n))
		}
		for off := 0; off < n; {
			e.mu.Lock()
			if e.dead || e.streams[s.id] != s {
				e.mu.Unlock()
				s.close()
				return
			}
			acts.Reset()
			m, perr := e.rc.PackageData(s.id, buf[off:n], &acts)
			s.r.applyBatched(e, &acts, &w)
			e.mu.Unlock()
			w.flush()
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
			if err == io.EOF && s.halfClose() {
				return
			}
			break
		}
	}
	s.close()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.dead && e.streams[s.id] == s {
		delete(e.streams, s.id)
		var acts circuit.RelayActions
		if e.rc.StreamEnded(s.id, reason, &acts) == nil {
			s.r.apply(e, &acts)
		}
	}
}

// halfClose runs when the target sent EOF: the client gets FIN and may
// keep sending. If the client already finished too, the stream is done.
// It reports false if the stream should instead end with END.
func (s *exitStream) halfClose() bool {
	e := s.e
	e.mu.Lock()
	if e.dead || e.streams[s.id] != s {
		e.mu.Unlock()
		s.close()
		return true
	}
	var acts circuit.RelayActions
	if e.rc.StreamFinished(s.id, &acts) != nil {
		e.mu.Unlock()
		return false
	}
	s.r.apply(e, &acts)
	s.qmu.Lock()
	s.finOut = true
	both := s.finSent
	s.qmu.Unlock()
	if both {
		delete(e.streams, s.id)
	}
	e.mu.Unlock()
	if both {
		s.close()
	}
	return true
}

// finish records the client's FIN: once the queued data is written, the
// target's write side is shut. e.mu is held.
func (s *exitStream) finish() {
	s.qmu.Lock()
	s.finIn = true
	s.qmu.Unlock()
	select {
	case s.qready <- struct{}{}:
	default:
	}
}

// sendFin shuts the target's write side after the client's FIN and ends
// the stream if the target had finished too.
func (s *exitStream) sendFin() {
	if cw, ok := s.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	e := s.e
	e.mu.Lock()
	s.qmu.Lock()
	s.finSent = true
	both := s.finOut
	s.qmu.Unlock()
	if both && !e.dead && e.streams[s.id] == s {
		delete(e.streams, s.id)
	}
	e.mu.Unlock()
	if both {
		s.close()
	}
}

// resolveFor answers a RESOLVE: the addresses the exit would connect to
// (private ones are left out unless the exit may reach them).
func (r *Relay) resolveFor(ctx context.Context, e *circEntry, req circuit.ResolveRequest) {
	var (
		status circuit.EndReason
		out    []circuit.ResolvedAddr
	)
	addrs, err := r.resolve(ctx, req.Host)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		status = circuit.EndTimeout
	case err != nil:
		status = circuit.EndResolveFailed
	}
	ttl := uint32(exitdns.DefaultTTL / time.Second)
	for _, a := range addrs {
		if a = a.Unmap(); r.cfg.AllowPrivateExit || !(isPrivate(a) || r.isOwnAddr(a)) {
			out = append(out, circuit.ResolvedAddr{Addr: a, TTL: ttl})
		}
	}
	if status == 0 && len(out) == 0 {
		status = circuit.EndResolveFailed
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead {
		return
	}
	var acts circuit.RelayActions
	if e.rc.Resolved(req.ID, status, out, &acts) == nil {
		r.apply(e, &acts)
	}
}

// exitWriteMax is the most client bytes an exit stream writes to its
// target per system call (and acknowledges at once).
const exitWriteMax = 64 << 10

// writeLoop writes client bytes to the target and acknowledges them: it
// takes everything queued at once and writes it in pieces of whole cells,
// up to exitWriteMax bytes each.
func (s *exitStream) writeLoop() {
	e := s.e
	var acts circuit.RelayActions // this goroutine's scratch for the circuit's actions
	var buf []byte                // the spare pair, swapped with the queue's
	var lens []uint16
	for {
		s.qmu.Lock()
		buf, s.qbuf = s.qbuf, buf[:0]
		lens, s.qlens = s.qlens, lens[:0]
		if s.closed {
			s.qbuf, s.qlens = nil, nil
		}
		fin := len(lens) == 0 && s.finIn && !s.finSent
		s.qmu.Unlock()
		if fin {
			s.sendFin()
			continue
		}
		if len(lens) == 0 {
			select {
			case <-s.done:
				return
			case <-s.qready:
			}
			continue
		}
		for off, next := 0, 0; next < len(lens); {
			n, cells := 0, 0
			for next < len(lens) && (cells == 0 || n+int(lens[next]) <= exitWriteMax) {
				n += int(lens[next])
				next++
				cells++
			}
			piece := buf[off : off+n]
			if !s.r.bw.wait(s.done, n) {
				s.r.account(e, -int64(len(buf)-off)) // taken from the queue, never written
				return
			}
			_, err := s.conn.Write(piece)
			s.r.account(e, -int64(n))
			off += n
			if err != nil {
				s.r.account(e, -int64(len(buf)-off))
				s.close()
				return
			}
			s.r.metrics.ExitBytes.WithLabelValues("to_target").Add(float64(n))
			e.mu.Lock()
			if !e.dead {
				acts.Reset()
				if e.rc.StreamConsumed(s.id, cells, &acts) == nil {
					s.r.apply(e, &acts)
				}
			}
			e.mu.Unlock()
		}
		if cap(buf) > exitWriteMax { // a burst's buffer is not kept
			buf, lens = nil, nil
		}
	}
}
