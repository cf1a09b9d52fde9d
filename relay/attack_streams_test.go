package relay

import (
	"context"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

// holdServer is a loopback target that accepts connections, sends nothing
// and keeps them until the other side closes; it counts connections
// accepted and still open.
type holdServer struct {
	addr             netip.AddrPort
	accepted, closed atomic.Int32
}

func newHoldServer(t *testing.T) *holdServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &holdServer{addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				io.Copy(io.Discard, c) // until the exit closes it
				h.closed.Add(1)
			}()
		}
	}()
	return h
}

func (h *holdServer) open() int32 { return h.accepted.Load() - h.closed.Load() }

// TestAttackThousandsOfStreams: one circuit sends 2,000 BEGINs. The exit
// opens MaxStreamsPerCircuit of them and answers every other one with
// END(resource limit) without connecting; the relay's goroutines and
// queued bytes stay bounded; the attacking circuit still works once it
// frees a slot, and another client is served meanwhile.
func TestAttackThousandsOfStreams(t *testing.T) {
	r, spec, cancel, done := startRelay(t, nil)
	defer func() { cancel(); <-done }()
	hold := newHoldServer(t)
	echo := echoServer(t)
	base := runtime.NumGoroutine()

	f := forgeCircuit(t, spec, "127.0.0.2", circuit.CircIDHighBit|1)
	const total = 2000
	for id := uint16(1); id <= total; id++ {
		f.begin(id, "127.0.0.1", hold.addr.Port())
	}
	connected, refused := 0, 0
	for connected+refused < total {
		m := f.recv()
		switch {
		case m.Cmd == circuit.RelayConnected && m.StreamID <= circuit.MaxStreamsPerCircuit:
			connected++
		case m.Cmd == circuit.RelayEnd && m.StreamID > circuit.MaxStreamsPerCircuit &&
			len(m.Data) == 1 && circuit.EndReason(m.Data[0]) == circuit.EndResourceLimit:
			refused++
		default:
			t.Fatalf("stream %d: relay command %d %x (after %d connected, %d refused)", m.StreamID, m.Cmd, m.Data, connected, refused)
		}
	}
	// Every CONNECTED was sent after its dial completed.
	waitFor(t, func() bool { return hold.accepted.Load() == circuit.MaxStreamsPerCircuit })
	if n := metricValue(r.metrics.Streams); n != circuit.MaxStreamsPerCircuit {
		t.Fatalf("%v exit streams open, want %d", n, circuit.MaxStreamsPerCircuit)
	}
	// Per open stream two goroutines at the exit (target reader and
	// writer) and one in the hold server, a few more for the links:
	// nothing per refused BEGIN.
	if g := runtime.NumGoroutine() - base; g > 3*circuit.MaxStreamsPerCircuit+32 {
		t.Fatalf("%d goroutines more than before the attack", g)
	}
	if q := r.queued.Load(); q > 64<<10 {
		t.Fatalf("%d bytes queued in the relay", q)
	}

	// Another client is served.
	h := dialOneHop(t, spec)
	echoRoundTrip(t, h, echo.Port())
	h.link.Close()

	// The attacking circuit lives on: ending a stream frees a slot that a
	// new BEGIN can take.
	f.sendMsg(circuit.RelayMsg{Cmd: circuit.RelayEnd, StreamID: 1, Data: []byte{byte(circuit.EndDone)}})
	waitFor(t, func() bool { return hold.closed.Load() == 1 })
	f.begin(total+1, "127.0.0.1", echo.Port())
	if m := f.recv(); m.Cmd != circuit.RelayConnected || m.StreamID != total+1 {
		t.Fatalf("after freeing a slot: relay command %d on stream %d, want CONNECTED", m.Cmd, m.StreamID)
	}
	if hold.accepted.Load() != circuit.MaxStreamsPerCircuit {
		t.Fatal("a refused BEGIN reached the target")
	}
	// Closing the link closes every exit connection.
	f.link.Close()
	waitFor(t, func() bool { return hold.open() == 0 })
	waitFor(t, func() bool { return metricValue(r.metrics.Streams) == 0 && r.circuitCount() == 0 })
}

// gatedDNS resolves every name to 127.0.0.1, but names starting with
// "gate." only once the gate is open.
type gatedDNS struct{ gate chan struct{} }

func (g *gatedDNS) Resolve(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	if len(host) > 5 && host[:5] == "gate." {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	return addrs("127.0.0.1"), 0, nil
}

// syncPoint sends a RESOLVE and waits for its answer: the relay's link
// reader handles cells in order, so every cell sent before it has been
// handled when the answer arrives.
func (f *forgedCirc) syncPoint(id uint16) {
	f.t.Helper()
	data, err := circuit.EncodeResolve("sync.example")
	if err != nil {
		f.t.Fatal(err)
	}
	f.sendMsg(circuit.RelayMsg{Cmd: circuit.RelayResolve, StreamID: id, Data: data})
	for {
		m := f.recv()
		if m.Cmd == circuit.RelayResolved && m.StreamID == id {
			return
		}
	}
}

// TestAttackBeginEndRace: a client that ends a stream while the exit is
// still connecting it (BEGIN, END, and the same BEGIN again) must not leave
// exit connections that no stream owns: such connections would escape
// MaxStreamsPerCircuit (one circuit could hold any number of them) and
// outlive the circuit. Found by this test; fixed in exit.go (begin).
func TestAttackBeginEndRace(t *testing.T) {
	dns := &gatedDNS{gate: make(chan struct{})}
	r, spec, cancel, done := startRelay(t, func(c *Config) { c.DNS, c.DNSCacheSize = dns, -1 })
	defer func() { cancel(); <-done }()
	hold := newHoldServer(t)

	f := forgeCircuit(t, spec, "127.0.0.2", circuit.CircIDHighBit|1)
	end := circuit.RelayMsg{Cmd: circuit.RelayEnd, StreamID: 1, Data: []byte{byte(circuit.EndDone)}}
	f.begin(1, "gate.example", hold.addr.Port()) // connects only once the gate opens
	f.sendMsg(end)                               // the client gives up on stream 1
	f.begin(1, "gate.example", hold.addr.Port()) // and reuses its ID
	f.begin(2, "gate.example", hold.addr.Port())
	f.sendMsg(circuit.RelayMsg{Cmd: circuit.RelayEnd, StreamID: 2, Data: []byte{byte(circuit.EndDone)}})
	f.syncPoint(3)
	close(dns.gate)

	// Three dials reach the target; only stream 1's second BEGIN owns one.
	if m := f.recv(); m.Cmd != circuit.RelayConnected || m.StreamID != 1 {
		t.Fatalf("relay command %d on stream %d, want CONNECTED on 1", m.Cmd, m.StreamID)
	}
	waitFor(t, func() bool { return hold.accepted.Load() == 3 })
	waitFor(t, func() bool { return hold.open() == 1 })
	if n := metricValue(r.metrics.Streams); n != 1 {
		t.Fatalf("%v exit streams, want 1", n)
	}
	// Nothing else came back for streams 1 and 2 (a second CONNECTED
	// would break the client's state machine).
	f.syncPoint(4)
	select {
	case c := <-f.cells:
		_, m, _ := f.open(&c)
		t.Fatalf("unexpected relay command %d on stream %d", m.Cmd, m.StreamID)
	default:
	}
	f.link.Close()
	waitFor(t, func() bool { return hold.open() == 0 })
}
