package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/veilnet/veil/circuit"
)

// StreamError reports why the exit ended or refused a stream.
type StreamError struct {
	Reason circuit.EndReason
}

// EndReason is the exit's END reason (package socks maps it to a reply).
func (e *StreamError) EndReason() circuit.EndReason { return e.Reason }

func (e *StreamError) Error() string {
	switch e.Reason {
	case circuit.EndResolveFailed:
		return "client: exit could not resolve the host"
	case circuit.EndConnectRefused:
		return "client: connection refused by the target"
	case circuit.EndExitPolicy:
		return "client: exit policy refused the target"
	case circuit.EndTimeout:
		return "client: exit timed out connecting"
	case circuit.EndNoRoute:
		return "client: target unreachable from the exit"
	case circuit.EndResourceLimit:
		return "client: exit out of resources"
	case circuit.EndDestroy:
		return "client: circuit closed"
	default:
		return "client: stream ended (reason " + strconv.Itoa(int(e.Reason)) + ")"
	}
}

// Dial opens a stream to addr ("host:port") through the network, with
// isolation key "" (see DialIsolated). Only "tcp", "tcp4" and "tcp6" are
// supported. The host is resolved by the exit, never locally.
func (c *Client) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.DialIsolated(ctx, "", network, addr)
}

// splitTarget checks network and splits addr into host and a non-zero port.
func splitTarget(network, addr string) (string, uint16, error) {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return "", 0, fmt.Errorf("client: network %q not supported", network)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("client: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("client: bad port %q", portStr)
	}
	return host, uint16(port), nil
}

// DialStream opens a stream to host:port on a circuit reserved for the
// isolation key: streams with different keys never share a circuit. host
// is a name or an IP literal and is resolved by the exit, never locally.
//
// A stream is tried on up to dialAttempts circuits: when a circuit cannot
// be built (another path is chosen), when the circuit dies, or when the
// exit does not answer within StreamAttemptTimeout (that circuit is then
// retired). When the exit itself refuses or fails the target (a
// *StreamError other than a closed circuit or exhausted resources), that
// answer is returned at once: another circuit would not help. Attempts
// are spaced 100, 200, 400 ms apart; the whole call is bounded by
// StreamOpenTimeout and ctx.
func (c *Client) DialStream(ctx context.Context, isolation, host string, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, StreamOpenTimeout)
	defer cancel()
	var lastErr error
	for attempt := 0; attempt < dialAttempts && ctx.Err() == nil; attempt++ {
		if attempt > 0 { // 100, 200, 400 ms: let a dying link or relay be noticed
			t := time.NewTimer(100 * time.Millisecond << (attempt - 1))
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		circ, err := c.circuitFor(ctx, isolation, port)
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		if err != nil {
			lastErr = err
			continue
		}
		actx, acancel := context.WithTimeout(ctx, StreamAttemptTimeout)
		s, err := c.openStream(actx, circ, host, port)
		acancel()
		if err == nil {
			return s, nil
		}
		lastErr = err
		var se *StreamError
		switch {
		case errors.As(err, &se) && se.Reason != circuit.EndDestroy && se.Reason != circuit.EndResourceLimit:
			return nil, err // the exit answered; another circuit would not help
		case errors.As(err, &se):
			c.kill(circ, true)
		default: // the exit did not answer in time
			c.retire(circ)
		}
		c.log.Debug("stream attempt failed; trying another circuit", "attempt", attempt+1, "err", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("client: opening stream: %w (last error: %v)", err, lastErr)
	}
	return nil, lastErr
}

func (c *Client) openStream(ctx context.Context, circ *clientCirc, host string, port uint16) (*Stream, error) {
	circ.mu.Lock()
	if circ.dead {
		circ.mu.Unlock()
		return nil, &StreamError{Reason: circuit.EndDestroy}
	}
	circ.acts.Reset()
	id, err := circ.cc.OpenStream(host, port, &circ.acts)
	if err != nil {
		circ.mu.Unlock()
		return nil, err
	}
	s := newStream(c, circ, id)
	circ.streams[id] = s
	circ.pathUse.StreamRequested()
	c.apply(circ)
	circ.mu.Unlock()
	select {
	case <-s.open:
	case <-s.done:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	if s.endReason != 0 {
		return nil, &StreamError{Reason: s.endReason}
	}
	return s, nil
}

// Stream is a stream through a circuit, as a net.Conn.
type Stream struct {
	c    *Client
	circ *clientCirc
	id   uint16

	open   chan struct{} // closed on CONNECTED
	done   chan struct{} // closed when the stream ends either way
	readyR chan struct{} // data arrived
	readyW chan struct{} // window reopened
	once   sync.Once

	// Guarded by circ.mu.
	recv        recvBuf // received bytes not yet read
	endReason   circuit.EndReason
	remoteEOF   bool // the stream is over: reads end, writes fail
	writeClosed bool // CloseWrite sent FIN: writes fail, reads go on
	readEOF     bool // the exit sent FIN: reads end, writes go on

	dlMu          sync.Mutex
	readDeadline  time.Time
	writeDeadline time.Time
}

var _ net.Conn = (*Stream)(nil)

func newStream(c *Client, circ *clientCirc, id uint16) *Stream {
	return &Stream{c: c, circ: circ, id: id, open: make(chan struct{}), done: make(chan struct{}),
		readyR: make(chan struct{}, 1), readyW: make(chan struct{}, 1)}
}

// Called with circ.mu held.
func (s *Stream) connected() { close(s.open) }

// push queues data; the caller wakes the reader (notify(s.readyR)).
func (s *Stream) push(b []byte) { s.recv.push(b) }
func (s *Stream) wake()         { notify(s.readyW) }

// finished: the exit half-closed (FIN); reads return io.EOF once the
// buffered bytes are read, and writes go on.
func (s *Stream) finished() {
	s.readEOF = true
	if s.writeClosed { // both ends finished: the circuit forgot the stream
		delete(s.circ.streams, s.id)
		s.once.Do(func() { close(s.done) })
	}
	notify(s.readyR)
}
func (s *Stream) ended(reason circuit.EndReason) {
	if reason != circuit.EndDone {
		s.endReason = reason
	}
	s.remoteEOF = true
	s.once.Do(func() { close(s.done) })
	notify(s.readyR)
	notify(s.readyW)
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *Stream) deadlineTimer(read bool) (<-chan time.Time, func()) {
	s.dlMu.Lock()
	d := s.writeDeadline
	if read {
		d = s.readDeadline
	}
	s.dlMu.Unlock()
	if d.IsZero() {
		return nil, func() {}
	}
	t := time.NewTimer(time.Until(d))
	return t.C, func() { t.Stop() }
}

// Read returns stream bytes; io.EOF once the exit closed the stream.
func (s *Stream) Read(p []byte) (int, error) {
	for {
		s.circ.mu.Lock()
		if s.recv.pending() {
			// Take as much as fits: a reader with a large buffer
			// (io.Copy's 32 KiB) then makes one write of many cells'
			// data instead of one write per cell.
			n, cells := s.recv.take(p)
			if cells > 0 && !s.circ.dead {
				s.circ.acts.Reset()
				if s.circ.cc.StreamConsumed(s.id, cells, &s.circ.acts) == nil {
					s.c.apply(s.circ)
				}
			}
			s.circ.mu.Unlock()
			return n, nil
		}
		eof, reason := s.remoteEOF || s.readEOF, s.endReason
		s.circ.mu.Unlock()
		if eof {
			if reason != 0 {
				return 0, &StreamError{Reason: reason}
			}
			return 0, io.EOF
		}
		timeout, stop := s.deadlineTimer(true)
		select {
		case <-s.readyR:
			stop()
		case <-timeout:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// Write sends p, blocking while the flow-control windows are closed.
func (s *Stream) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		s.circ.mu.Lock()
		if s.remoteEOF || s.writeClosed || s.circ.dead {
			s.circ.mu.Unlock()
			return written, net.ErrClosed
		}
		if s.circ.cc.CanPackage(s.id) {
			s.circ.acts.Reset()
			n, err := s.circ.cc.PackageData(s.id, p[written:], &s.circ.acts)
			s.c.apply(s.circ)
			s.circ.mu.Unlock()
			written += n
			if err != nil {
				return written, err
			}
			continue
		}
		s.circ.mu.Unlock()
		timeout, stop := s.deadlineTimer(false)
		select {
		case <-s.readyW:
			stop()
		case <-s.done:
			stop()
		case <-timeout:
			return written, os.ErrDeadlineExceeded
		}
	}
	return written, nil
}

// Close sends END and releases the stream.
func (s *Stream) Close() error {
	s.circ.mu.Lock()
	if !s.circ.dead && s.circ.streams[s.id] == s {
		delete(s.circ.streams, s.id)
		s.circ.acts.Reset()
		if s.circ.cc.CloseStream(s.id, &s.circ.acts) == nil {
			s.c.apply(s.circ)
		}
	}
	s.remoteEOF = true
	s.recv.release()
	s.once.Do(func() { close(s.done) })
	s.circ.mu.Unlock()
	notify(s.readyR)
	return nil
}

// streamAddr is the address a Stream reports: the network is "veil" and
// no real address is known or leaked.
type streamAddr struct{}

func (streamAddr) Network() string { return "veil" }
func (streamAddr) String() string  { return "veil-stream" }

// LocalAddr reports no address.
func (s *Stream) LocalAddr() net.Addr { return streamAddr{} }

// RemoteAddr reports no address.
func (s *Stream) RemoteAddr() net.Addr { return streamAddr{} }

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.dlMu.Lock()
	s.readDeadline = t
	s.dlMu.Unlock()
	notify(s.readyR)
	return nil
}

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.dlMu.Lock()
	s.writeDeadline = t
	s.dlMu.Unlock()
	notify(s.readyW)
	return nil
}

// CloseWrite half-closes the stream: it sends FIN, after which writes
// fail but reads go on until the exit finishes or ends the stream (the exit
// passes the half-close on to the target with its own CloseWrite).
func (s *Stream) CloseWrite() error {
	s.circ.mu.Lock()
	defer s.circ.mu.Unlock()
	if s.writeClosed || s.remoteEOF || s.circ.dead || s.circ.streams[s.id] != s {
		return nil
	}
	s.writeClosed = true
	s.circ.acts.Reset()
	err := s.circ.cc.FinishStream(s.id, &s.circ.acts)
	if err == nil {
		s.c.apply(s.circ)
	}
	if s.readEOF { // the exit had finished first: the stream is gone
		delete(s.circ.streams, s.id)
		s.once.Do(func() { close(s.done) })
	}
	notify(s.readyW)
	return err
}
