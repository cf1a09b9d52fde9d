package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/linkio"
)

// testRelay starts a relay (startRelay) with the given exit policy whose
// only authority is not running (nothing here needs a consensus), and
// returns what a client needs to reach it and a stop function.
func testRelay(t *testing.T, policy string, allowPrivate bool) (circuit.HopSpec, func()) {
	t.Helper()
	p, err := directory.ParseExitPolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	return testRelayWith(t, func(c *Config) { c.ExitPolicy, c.AllowPrivateExit = p, allowPrivate })
}

// testRelayWith starts a relay configured by mod (after startRelay's
// defaults) and returns its hop spec and a stop function.
func testRelayWith(t *testing.T, mod func(*Config)) (circuit.HopSpec, func()) {
	t.Helper()
	_, spec, cancel, done := startRelay(t, mod)
	return spec, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay Run: %v", err)
		}
	}
}

// oneHop is a client-side one-hop circuit over a real link.
type oneHop struct {
	t     *testing.T
	link  *linkio.Conn
	cc    *circuit.ClientCircuit
	cells chan circuit.Cell
	acts  circuit.ClientActions
}

const testCircID = circuit.CircIDHighBit | 7

func dialOneHop(t *testing.T, spec circuit.HopSpec) *oneHop {
	t.Helper()
	throwaway, _ := crypto.GenerateStaticKey(rand.Reader)
	var d net.Dialer
	link, err := linkio.Dial(context.Background(), &d, spec.Addr.String(), &throwaway, spec.LinkKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	return oneHopOver(t, link, spec)
}

func (h *oneHop) send(c circuit.Cell) {
	if err := h.link.Send(&c); err != nil {
		h.t.Fatal(err)
	}
}

func (h *oneHop) next() circuit.Cell {
	select {
	case c := <-h.cells:
		return c
	case <-time.After(20 * time.Second):
		h.t.Fatal("no cell from the relay within 20 s")
		return circuit.Cell{}
	}
}

func (h *oneHop) flush() {
	for _, c := range h.acts.ToLink {
		c.CircID = testCircID
		h.send(c)
	}
	h.acts.Reset()
}

// openStream opens a stream to port on 127.0.0.1 through h's circuit and
// waits for CONNECTED.
func (h *oneHop) openStream(port uint16) uint16 {
	h.t.Helper()
	id, err := h.cc.OpenStream("127.0.0.1", port, &h.acts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.flush()
	h.recv()
	if len(h.acts.Connected) != 1 || h.acts.Connected[0] != id {
		h.t.Fatalf("want CONNECTED, got ends %+v", h.acts.Ends)
	}
	h.acts.Reset()
	return id
}

// echo sends msg (one window's worth at most) on stream id, which leads
// to an echo server, and returns the bytes that come back.
func (h *oneHop) echo(id uint16, msg []byte) []byte {
	h.t.Helper()
	if n, err := h.cc.PackageData(id, msg, &h.acts); err != nil || n != len(msg) {
		h.t.Fatalf("packaged %d of %d bytes: %v", n, len(msg), err)
	}
	h.flush()
	var got []byte
	for len(got) < len(msg) {
		h.recv()
		for _, d := range h.acts.Data {
			got = append(got, d.Data...)
		}
		h.acts.Reset()
	}
	return got
}

// recv handles cells until the client state machine reports something.
func (h *oneHop) recv() {
	c := h.next()
	if c.Cmd != circuit.CmdRelay {
		h.t.Fatalf("got cell %d, want RELAY", c.Cmd)
	}
	if err := h.cc.HandleBackward(&c.Payload, &h.acts); err != nil {
		h.t.Fatal(err)
	}
}

func echoServer(t *testing.T) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func TestExitStreamEcho(t *testing.T) {
	spec, stop := testRelay(t, "accept *:*", true)
	defer stop()
	echo := echoServer(t)
	h := dialOneHop(t, spec)
	id := h.openStream(echo.Port())
	msg := bytes.Repeat([]byte("veil"), 300)
	if got := h.echo(id, msg); !bytes.Equal(got, msg) {
		t.Fatal("echo through the exit differs")
	}
}

// TestExitStreamBulkEcho: a MiB sent through the exit to an echo server
// comes back whole and in order. The exit queues a stream's cells as bytes
// and its writer takes them all at once, writing up to exitWriteMax bytes
// of whole cells per system call and acknowledging those cells together.
func TestExitStreamBulkEcho(t *testing.T) {
	spec, stop := testRelay(t, "accept *:*", true)
	defer stop()
	echo := echoServer(t)
	h := dialOneHop(t, spec)
	id := h.openStream(echo.Port())
	msg := make([]byte, 1<<20)
	rand.Read(msg)
	sent := 0
	var got []byte
	for len(got) < len(msg) {
		if sent < len(msg) {
			n, err := h.cc.PackageData(id, msg[sent:], &h.acts)
			if err != nil {
				t.Fatal(err)
			}
			sent += n
		}
		h.flush()
		h.recv()
		for _, d := range h.acts.Data {
			got = append(got, d.Data...)
			if err := h.cc.StreamConsumed(id, 1, &h.acts); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) > sent || !bytes.Equal(got, msg[:len(got)]) {
			t.Fatalf("after %d bytes sent, %d came back and they differ", sent, len(got))
		}
		h.flush()
	}
}

// TestIdleCircuitReleasesKeys: the relay's periodic sweep drops the
// expanded layer keys of a circuit that carried no cell for a whole
// period, not before, and the circuit carries data afterwards.
func TestIdleCircuitReleasesKeys(t *testing.T) {
	p, _ := directory.ParseExitPolicy("accept *:*")
	r, spec, cancel, done := startRelay(t, func(c *Config) {
		c.ExitPolicy, c.AllowPrivateExit = p, true
		c.KeyReleasePeriod = -1 // the test sweeps by hand
	})
	defer func() { cancel(); <-done }()
	echo := echoServer(t)
	h := dialOneHop(t, spec)
	id := h.openStream(echo.Port())
	if n := r.releaseIdleKeys(); n != 0 {
		t.Fatalf("the first sweep after the stream opened released %d circuits' keys", n)
	}
	if n := r.releaseIdleKeys(); n != 1 {
		t.Fatalf("a sweep after an idle period released %d circuits' keys, want 1", n)
	}
	msg := []byte("after the keys were released")
	if got := h.echo(id, msg); !bytes.Equal(got, msg) {
		t.Fatalf("echo after the release: %q", got)
	}
	if n := r.releaseIdleKeys(); n != 0 {
		t.Fatalf("a sweep right after data released %d circuits' keys", n)
	}
}

// TestTamperedCellDestroysCircuit: a RELAY cell modified in flight makes
// the relay tear the circuit down with DESTROY.
func TestTamperedCellDestroysCircuit(t *testing.T) {
	spec, stop := testRelay(t, "accept *:*", true)
	defer stop()
	h := dialOneHop(t, spec)
	if _, err := h.cc.OpenStream("127.0.0.1", 9, &h.acts); err != nil {
		t.Fatal(err)
	}
	c := h.acts.ToLink[0]
	c.CircID = testCircID
	c.Payload[3] ^= 0x01
	h.acts.Reset()
	h.send(c)
	got := h.next()
	if got.Cmd != circuit.CmdDestroy || got.CircID != testCircID || circuit.DestroyReason(got.Payload[0]) != circuit.DestroyProtocol {
		t.Fatalf("got cell cmd %d reason %d, want DESTROY(protocol)", got.Cmd, got.Payload[0])
	}
}

// TestExitRefusesPrivateTargets: without the testnet setting, an exit
// whose policy accepts everything still refuses loopback, by literal and
// by a name that resolves to loopback.
func TestExitRefusesPrivateTargets(t *testing.T) {
	spec, stop := testRelay(t, "accept *:*", false)
	defer stop()
	echo := echoServer(t)
	for _, host := range []string{"127.0.0.1", "localhost", "::1", "::ffff:127.0.0.1"} {
		h := dialOneHop(t, spec)
		if _, err := h.cc.OpenStream(host, echo.Port(), &h.acts); err != nil {
			t.Fatal(err)
		}
		h.flush()
		h.recv()
		if len(h.acts.Ends) != 1 || h.acts.Ends[0].Reason != circuit.EndExitPolicy {
			t.Fatalf("%s: want END(exit policy), got connected=%v ends=%+v", host, h.acts.Connected, h.acts.Ends)
		}
		h.link.Close()
	}
}

func TestIsPrivate(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.4", "169.254.1.1", "::1", "fe80::1", "fc00::1", "0.0.0.0", "100.64.0.1", "::ffff:10.0.0.1", "224.0.0.1"} {
		if !isPrivate(netip.MustParseAddr(s)) {
			t.Errorf("%s not treated as private", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "2001:4860::8888"} {
		if isPrivate(netip.MustParseAddr(s)) {
			t.Errorf("%s treated as private", s)
		}
	}
}

// TestInboundLinkLimit: beyond MaxInboundLinks, new connections are closed
// at once, and a slot frees when a link goes away.
func TestInboundLinkLimit(t *testing.T) {
	_, spec, cancel, done := startRelay(t, func(c *Config) { c.MaxInboundLinks = 2 })
	defer func() { cancel(); <-done }()
	addr := spec.Addr.String()

	// Two silent connections hold both slots (they sit in the handshake).
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The third is closed by the relay: a read sees EOF, not a timeout.
	var third net.Conn
	var err error
	for range 50 { // the relay may not have accepted the first two yet
		third, err = net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		third.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err = third.Read(make([]byte, 1))
		third.Close()
		if err == io.EOF {
			break
		}
	}
	if err != io.EOF {
		t.Fatalf("third connection: %v, want EOF from the relay closing it", err)
	}
	for _, c := range held {
		c.Close()
	}
	// A slot frees: a real link now completes.
	linked := false
	for range 50 {
		throwaway, _ := crypto.GenerateStaticKey(rand.Reader)
		var d net.Dialer
		link, err := linkio.Dial(context.Background(), &d, spec.Addr.String(), &throwaway, spec.LinkKey, rand.Reader)
		if err == nil {
			link.Close()
			linked = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !linked {
		t.Fatal("no link completed after the held connections closed")
	}
}

// TestRefusedCreateContinuationsDropped: when a relay refuses a fragmented
// CREATE at its first cell, the continuation cells that follow are
// dropped, not read as new CREATEs: the client sees exactly one DESTROY.
func TestRefusedCreateContinuationsDropped(t *testing.T) {
	spec, stop := testRelay(t, "reject *:*", false)
	defer stop()
	h := dialOneHop(t, spec)
	msg := make([]byte, 1145) // a hybrid message 1's size; content is irrelevant
	payloads, err := circuit.CreatePayloads(circuit.HandshakeHybrid, msg)
	if err != nil || len(payloads) != 3 {
		t.Fatalf("%d payloads, %v", len(payloads), err)
	}
	// Fill the relay's pending-CREATE table with first fragments.
	for i := range MaxPendingCreates {
		h.send(circuit.Cell{CircID: circuit.CircIDHighBit | uint32(100+i), Cmd: circuit.CmdCreate, Payload: payloads[0]})
	}
	// The next CREATE is refused at its first cell; then its two
	// continuations arrive, then a sentinel CREATE that is refused too.
	const refused, sentinel = circuit.CircIDHighBit | 500, circuit.CircIDHighBit | 501
	for _, p := range payloads {
		h.send(circuit.Cell{CircID: refused, Cmd: circuit.CmdCreate, Payload: p})
	}
	h.send(circuit.Cell{CircID: sentinel, Cmd: circuit.CmdCreate, Payload: payloads[0]})
	got := []uint32{h.next().CircID, h.next().CircID}
	if got[0] != refused || got[1] != sentinel {
		t.Fatalf("DESTROYs for circuits %x, want one for %x then one for %x", got, uint32(refused), uint32(sentinel))
	}
}

// TestIdleLinksClosed: a link with no circuit and no traffic for
// IdleLinkTimeout is closed; a link carrying a circuit is kept. The relay
// runs on a clock the test moves, so no real waiting decides the outcome.
func TestIdleLinksClosed(t *testing.T) {
	var mu sync.Mutex
	offset := time.Duration(0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	r, spec, cancel, done := startRelay(t, func(c *Config) {
		c.Now, c.IdleLinkTimeout = now, time.Minute
		c.ExitPolicy, c.AllowPrivateExit = directory.RejectAllPolicy(), false
	})
	defer func() { cancel(); <-done }()
	adv, linkKey := spec.Addr, spec.LinkKey

	busy := dialOneHop(t, spec) // carries a circuit
	throwaway, _ := crypto.GenerateStaticKey(rand.Reader)
	var d net.Dialer
	idle, err := linkio.Dial(context.Background(), &d, adv.String(), &throwaway, linkKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	go idle.ReadLoop(func(*circuit.Cell) error { return nil })
	// The relay registers an accepted link just after the handshake
	// completes: wait for both before moving the clock.
	for start := time.Now(); ; {
		r.mu.Lock()
		n := len(r.links)
		r.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("relay holds %d links, want 2", n)
		}
		time.Sleep(5 * time.Millisecond)
	}

	mu.Lock()
	offset = time.Hour
	mu.Unlock()
	select {
	case <-idle.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("idle link not closed")
	}
	// The pass that closed the idle link saw the busy one with the same
	// clock and kept it: it still works.
	select {
	case <-busy.link.Done():
		t.Fatal("a link carrying a circuit was closed as idle")
	default:
	}
	if _, err := busy.cc.OpenStream("127.0.0.1", 9, &busy.acts); err != nil {
		t.Fatal(err)
	}
	busy.flush()
	busy.recv() // an END (nothing listens on port 9, and the policy rejects all): the link is alive
}
