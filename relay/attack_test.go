package relay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
)

// Link-level attacks on a real relay: garbage and truncated frames,
// slowloris handshakes, half-open connections. Each checks that the relay
// closes the connection, gives back every slot and goroutine, and serves
// an honest client.

// shortHandshakeListener shortens the relay's link handshake timeout for a
// test: linkio.Accept arms a deadline of linkio.HandshakeTimeout (10 s)
// with SetDeadline before the handshake and clears it after; the conns
// this listener returns turn any non-zero SetDeadline into now+d. The
// relay's own code sets and relies on the deadline; only its length
// changes. (The relay's Config has no handshake timeout of its own.)
type shortHandshakeListener struct {
	net.Listener
	d time.Duration
}

func (l shortHandshakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &shortDeadlineConn{Conn: c, d: l.d}, nil
}

type shortDeadlineConn struct {
	net.Conn
	d time.Duration
}

func (c *shortDeadlineConn) SetDeadline(t time.Time) error {
	if !t.IsZero() {
		t = time.Now().Add(c.d)
	}
	return c.Conn.SetDeadline(t)
}

// withShortHandshake is a startRelay modifier.
func withShortHandshake(d time.Duration) func(*Config) {
	return func(c *Config) { c.Listener = shortHandshakeListener{c.Listener, d} }
}

// rawDial opens a bare TCP connection to spec from the local address from.
func rawDial(t *testing.T, spec circuit.HopSpec, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", spec.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByPeer reports whether the relay closed c: a read ends in EOF or a
// reset (not our own timeout) within limit. Bytes the relay sent first
// (a handshake reply) are skipped.
func closedByPeer(c net.Conn, limit time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// linkMsg1 is a valid first link handshake message for spec, from a fresh
// throwaway key, with its length header.
func linkMsg1(t *testing.T, spec circuit.HopSpec) ([]byte, *circuit.LinkHandshake) {
	t.Helper()
	k, _ := crypto.GenerateStaticKey(rand.Reader)
	hs, msg1, err := circuit.NewLinkInitiator(rand.Reader, &k, spec.LinkKey)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(msg1))), msg1...), hs
}

// connGoroutineMarks are frames of the goroutines a relay runs per
// connection, link, circuit or stream (not its long-lived loops), and of
// linkio on either side.
var connGoroutineMarks = []string{"relay.(*Relay).acceptLoop.func", "relay.(*Relay).serveLink", "relay.(*Relay).readLink",
	"relay.(*linkSched).run", "relay.(*exitStream)", "relay.(*Relay).extend", "relay.(*Relay).begin", "linkio.(*Conn)"}

// connGoroutines returns the stacks of goroutines with a connGoroutineMarks
// frame.
func connGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, m := range connGoroutineMarks {
			if strings.Contains(g, m) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// relayIdle waits until r holds no link, circuit, per-address slot or
// queued byte, and no goroutine of any connection is left (the test's own
// links included: call it when they are closed).
func relayIdle(t *testing.T, r *Relay) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		links := len(r.links)
		r.mu.Unlock()
		r.perAddr.mu.Lock()
		addrs := len(r.perAddr.n)
		r.perAddr.mu.Unlock()
		g := connGoroutines()
		if links == 0 && addrs == 0 && r.circuitCount() == 0 && r.queued.Load() == 0 && len(g) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay not idle: %d links, %d addresses, %d circuits, %d bytes queued, %d connection goroutines:\n%s",
				links, addrs, r.circuitCount(), r.queued.Load(), len(g), strings.Join(g, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAttackGarbageAndTruncatedFrames: handshake messages cut short or
// announcing an impossible length, and after a completed handshake frames
// with impossible lengths, garbage ciphertext, undecodable cells, and a
// frame cut mid-way (with and without a circuit open): every time the
// relay closes the connection, and afterwards it holds no link, circuit,
// per-address slot or goroutine from the attack, and serves an honest
// client.
func TestAttackGarbageAndTruncatedFrames(t *testing.T) {
	r, spec, cancel, done := startRelay(t, nil)
	defer func() { cancel(); <-done }()
	echo := echoServer(t)

	sealed := func(l *rawLink, cells ...circuit.Cell) []byte { return l.appendFrame(nil, cells) }
	header := func(n int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(n)) }
	createCell := func() circuit.Cell {
		_, msg1, _ := circuit.NewClientHandshake(rand.Reader, spec.Identity, spec.OnionKey, 1)
		p, _ := circuit.CreatePayloads(circuit.HandshakeNK, msg1)
		return circuit.Cell{CircID: circuit.CircIDHighBit | 1, Cmd: circuit.CmdCreate, Payload: p[0]}
	}

	handshakeCases := []struct {
		name  string
		bytes func(hdr []byte, msg1 []byte) []byte
		close bool // the attacker hangs up after sending
	}{
		{"msg1 cut short then FIN", func(h, m []byte) []byte { return append(h, m[:20]...) }, true},
		{"length header cut short then FIN", func(h, m []byte) []byte { return h[:1] }, true},
		{"msg1 announcing 65535 bytes", func(h, m []byte) []byte { return append(header(0xffff), m...) }, false},
		{"msg1 announcing 0 bytes", func(h, m []byte) []byte { return header(0) }, false},
		{"msg1 of random bytes", func(h, m []byte) []byte { g := make([]byte, len(m)); rand.Read(g); return append(h, g...) }, false},
	}
	for _, tc := range handshakeCases {
		c := rawDial(t, spec, "127.0.0.2")
		k, _ := crypto.GenerateStaticKey(rand.Reader)
		_, msg1, _ := circuit.NewLinkInitiator(rand.Reader, &k, spec.LinkKey)
		c.Write(tc.bytes(header(len(msg1)), msg1))
		if tc.close {
			c.(*net.TCPConn).CloseWrite()
		}
		// The relay closes at once; its handshake deadline (10 s) is
		// twice this limit, so a relay that waited for it fails here.
		if !closedByPeer(c, 5*time.Second) {
			t.Errorf("%s: connection not closed by the relay", tc.name)
		}
		c.Close()
	}

	frameCases := []struct {
		name  string
		bytes func(l *rawLink) []byte
		close bool
	}{
		{"length 65535", func(l *rawLink) []byte { return append(header(0xffff), make([]byte, 64)...) }, false},
		{"length beyond MaxFrameSize", func(l *rawLink) []byte { return header(circuit.MaxFrameSize + circuit.CellSize) }, false},
		{"length not whole cells", func(l *rawLink) []byte { return append(header(100), make([]byte, 100)...) }, false},
		{"length of the tag alone", func(l *rawLink) []byte { return append(header(circuit.TagSize), make([]byte, circuit.TagSize)...) }, false},
		{"garbage ciphertext", func(l *rawLink) []byte {
			n := circuit.CellSize + circuit.TagSize
			g := make([]byte, n)
			rand.Read(g)
			return append(header(n), g...)
		}, false},
		{"sealed cell with an unknown command", func(l *rawLink) []byte {
			return sealed(l, circuit.Cell{CircID: 5, Cmd: 0xEE})
		}, false},
		{"sealed cell with circuit ID 0", func(l *rawLink) []byte {
			return sealed(l, circuit.Cell{CircID: 0, Cmd: circuit.CmdRelay})
		}, false},
		{"frame cut mid-way then FIN", func(l *rawLink) []byte {
			f := sealed(l, createCell(), createCell())
			return f[:len(f)/2]
		}, true},
		{"CREATE then a frame cut mid-way then FIN", func(l *rawLink) []byte {
			f := append(sealed(l, createCell()), sealed(l, circuit.Cell{CircID: circuit.CircIDHighBit | 1, Cmd: circuit.CmdRelay})...)
			return f[:len(f)-100]
		}, true},
		{"replayed frame", func(l *rawLink) []byte {
			f := sealed(l, createCell())
			return append(f, f...)
		}, false},
	}
	for _, tc := range frameCases {
		l, err := dialRawLink("127.0.0.2", spec.Addr.String(), spec.LinkKey)
		if err != nil {
			t.Fatal(err)
		}
		l.nc.Write(tc.bytes(l))
		if tc.close {
			l.nc.(*net.TCPConn).CloseWrite()
		}
		if !closedByPeer(l.nc, 10*time.Second) {
			t.Errorf("%s: link not closed by the relay", tc.name)
		}
		l.nc.Close()
	}
	relayIdle(t, r)
	if n := metricValue(r.metrics.Handshakes.WithLabelValues("link", "failed")); n != float64(len(handshakeCases)) {
		t.Errorf("%v failed link handshakes counted, want %d", n, len(handshakeCases))
	}

	h := dialOneHop(t, spec)
	echoRoundTrip(t, h, echo.Port())
}

// slowloris sends b one byte at a time, every, until the relay closes
// the connection or b is sent; it reports whether the relay closed it
// first.
func slowloris(c net.Conn, b []byte, every time.Duration) bool {
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c)
		close(closed)
	}()
	for i := range b {
		select {
		case <-closed:
			return true
		case <-time.After(every):
		}
		if _, err := c.Write(b[i : i+1]); err != nil {
			return true
		}
	}
	select {
	case <-closed:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

// TestAttackSlowloris: one address opens as many connections as it may
// and drips a link handshake into each, a byte every 100 ms (it would
// take 5 s); more connections from it are closed at once. The handshake
// deadline (shortened to 300 ms) closes the dripping ones, which frees
// the address's slots; a client at another address links and is served
// meanwhile.
func TestAttackSlowloris(t *testing.T) {
	const perAddr = 8
	r, spec, cancel, done := startRelay(t, func(c *Config) {
		c.MaxLinksPerAddress = perAddr
		withShortHandshake(300 * time.Millisecond)(c)
	})
	defer func() { cancel(); <-done }()
	echo := echoServer(t)

	var wg sync.WaitGroup
	var mu sync.Mutex
	cut := 0
	conns := make([]net.Conn, perAddr)
	for i := range conns {
		conns[i] = rawDial(t, spec, "127.0.0.2")
	}
	waitFor(t, func() bool { return r.perAddr.Count(netipAddr("127.0.0.2")) == perAddr })
	for _, c := range conns {
		msg1, _ := linkMsg1(t, spec)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if slowloris(c, msg1, 100*time.Millisecond) {
				mu.Lock()
				cut++
				mu.Unlock()
			}
		}()
	}
	// Beyond the per-address limit: closed at once, nothing sent.
	for range 4 {
		c := rawDial(t, spec, "127.0.0.2")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF || n != 0 {
			t.Fatalf("connection beyond the per-address limit: read %d, %v; want EOF", n, err)
		}
	}
	// An honest client elsewhere is served meanwhile.
	link, err := dialFrom(t, spec, "127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, oneHopOver(t, link, spec), echo.Port())
	link.Close()

	wg.Wait()
	if cut != perAddr {
		t.Fatalf("%d of %d slowloris handshakes cut by the relay", cut, perAddr)
	}
	relayIdle(t, r)
	if n := metricValue(r.metrics.Handshakes.WithLabelValues("link", "failed")); n != perAddr {
		t.Errorf("%v failed link handshakes, want %d", n, perAddr)
	}
	// The address's slots are free again.
	link, err = dialFrom(t, spec, "127.0.0.2")
	if err != nil {
		t.Fatalf("the slowloris address cannot link after its connections were cut: %v", err)
	}
	link.Close()
}

// TestAttackHalfOpen: connections that never finish the handshake (silent
// after connecting, silent after half of message 1, silent after message
// 1 without sending message 3) are closed by the handshake deadline
// (shortened to 300 ms); a link whose only circuit was destroyed and that
// then carries nothing is closed by the idle timeout (on a clock the test
// moves). The relay is left holding nothing.
func TestAttackHalfOpen(t *testing.T) {
	var mu sync.Mutex
	offset := time.Duration(0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	r, spec, cancel, done := startRelay(t, func(c *Config) {
		c.Now, c.IdleLinkTimeout = now, time.Minute
		withShortHandshake(300 * time.Millisecond)(c)
	})
	defer func() { cancel(); <-done }()

	silent := rawDial(t, spec, "127.0.0.2")
	half := rawDial(t, spec, "127.0.0.2")
	msg1, hs := linkMsg1(t, spec)
	half.Write(msg1[:10])
	noMsg3 := rawDial(t, spec, "127.0.0.2")
	noMsg3.Write(msg1)
	// noMsg3 gets message 2, then the relay waits for message 3.
	var msg2 [circuit.FrameHeaderSize + circuit.LinkMsg2Size]byte
	if _, err := io.ReadFull(noMsg3, msg2[:]); err != nil {
		t.Fatalf("no message 2: %v", err)
	}
	if _, err := hs.ReadMessage(msg2[circuit.FrameHeaderSize:]); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"silent": silent, "half of message 1": half, "no message 3": noMsg3} {
		if !closedByPeer(c, 10*time.Second) {
			t.Errorf("%s: not closed by the handshake deadline", name)
		}
	}

	// A link whose circuit is gone, then silent.
	h := dialOneHop(t, spec)
	h.send(circuit.DestroyCell(testCircID, circuit.DestroyFinished))
	waitFor(t, func() bool { return r.circuitCount() == 0 })
	mu.Lock()
	offset = time.Hour
	mu.Unlock()
	select {
	case <-h.link.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("idle link with no circuit left not closed")
	}
	relayIdle(t, r)
}
