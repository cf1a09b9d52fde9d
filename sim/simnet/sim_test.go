package simnet

import (
	"net/netip"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

func TestEventsRunInTimeThenSequenceOrder(t *testing.T) {
	s := New(1)
	var got []int
	s.After(2*time.Second, func() { got = append(got, 3) })
	s.After(time.Second, func() { got = append(got, 1) })
	s.After(time.Second, func() { got = append(got, 2) })
	stopped := s.After(time.Second, func() { got = append(got, 99) })
	stopped.Stop()
	s.After(3*time.Second, func() { got = append(got, 4) })
	s.Run(Epoch.Add(2 * time.Second))
	if want := []int{1, 2, 3}; len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("got %v, want %v", got, want)
	}
	if !s.Now().Equal(Epoch.Add(2 * time.Second)) {
		t.Fatalf("clock at %v", s.Now())
	}
	s.Run(Epoch.Add(time.Hour))
	if len(got) != 4 || !s.Now().Equal(Epoch.Add(time.Hour)) {
		t.Fatalf("got %v at %v", got, s.Now())
	}
}

func TestStreamsAreDeterministicAndIndependent(t *testing.T) {
	a, b, c := NewRand(5, "x"), NewRand(5, "x"), NewRand(5, "y")
	for range 100 {
		va, vb, vc := a.Uint64(), b.Uint64(), c.Uint64()
		if va != vb {
			t.Fatal("one seed and label gave two streams")
		}
		if va == vc {
			t.Fatal("two labels gave one stream")
		}
	}
}

type recorder struct {
	cells    []uint32
	at       []time.Duration
	accepted int
	closed   int
	s        *Sim
	onCell   func(*circuit.Cell)
}

func (r *recorder) Accepted(*Link) { r.accepted++ }
func (r *recorder) Cell(_ *Link, c *circuit.Cell) {
	r.cells = append(r.cells, c.CircID)
	r.at = append(r.at, r.s.Elapsed())
	if r.onCell != nil {
		if c.Payload[0] != c.Payload[circuit.PayloadSize-1] {
			panic("cell payload changed in flight")
		}
		r.onCell(c)
	}
}
func (r *recorder) Closed(*Link) { r.closed++ }

func twoNodes(t *testing.T, cfg Config, rate float64) (*Sim, *Network, *Node, *Node, *recorder, *recorder) {
	t.Helper()
	s := New(1)
	n := NewNetwork(s, cfg)
	ra, rb := &recorder{s: s}, &recorder{s: s}
	a := n.AddNode("a", 0, netip.MustParseAddr("10.0.0.1"), rate, ra)
	b := n.AddNode("b", 0, netip.MustParseAddr("10.1.0.1"), rate, rb)
	return s, n, a, b, ra, rb
}

// TestLinkTiming: dialing takes two round trips; cells leave the uplink
// one serialization time apart and arrive one latency later.
func TestLinkTiming(t *testing.T) {
	lat := 10 * time.Millisecond
	rate := float64(circuit.CellSize) * 1000 // one cell per millisecond
	s, n, a, b, _, rb := twoNodes(t, Config{Latency: [][]time.Duration{{lat}}}, rate)
	var l *Link
	n.Dial(a, b, func(x *Link, err error) {
		if err != nil {
			t.Fatal(err)
		}
		l = x
	})
	s.Run(Epoch.Add(time.Second))
	if l == nil || rb.accepted != 1 {
		t.Fatal("dial did not complete")
	}
	for i := range 3 {
		c := circuit.Cell{CircID: uint32(i + 1), Cmd: circuit.CmdRelay}
		l.Send(a, &c)
	}
	s.Run(Epoch.Add(2 * time.Second))
	want := []time.Duration{time.Second + 11*time.Millisecond, time.Second + 12*time.Millisecond, time.Second + 13*time.Millisecond}
	for i := range want {
		if rb.cells[i] != uint32(i+1) || rb.at[i] != want[i] {
			t.Errorf("cell %d: id %d at %v, want %d at %v", i, rb.cells[i], rb.at[i], i+1, want[i])
		}
	}
}

// TestJitterAndLossNeverReorder: cells on one link arrive in order.
func TestJitterAndLossNeverReorder(t *testing.T) {
	s, n, a, b, _, rb := twoNodes(t, Config{Latency: [][]time.Duration{{20 * time.Millisecond}}, Jitter: 1, Loss: 0.2}, 0)
	n.Dial(a, b, func(l *Link, err error) {
		for i := range 1000 {
			c := circuit.Cell{CircID: uint32(i + 1), Cmd: circuit.CmdRelay}
			l.Send(a, &c)
		}
	})
	s.Run(Epoch.Add(time.Minute))
	if len(rb.cells) != 1000 {
		t.Fatalf("%d cells arrived", len(rb.cells))
	}
	for i, id := range rb.cells {
		if id != uint32(i+1) {
			t.Fatalf("cell %d arrived in position %d", id, i)
		}
	}
}

// TestCrashClosesLinks: a crash loses cells in flight, the peer hears of
// it one latency later, and dials to the crashed node are refused.
func TestCrashClosesLinks(t *testing.T) {
	s, n, a, b, ra, rb := twoNodes(t, Config{Latency: [][]time.Duration{{10 * time.Millisecond}}}, 0)
	var l *Link
	n.Dial(a, b, func(x *Link, err error) { l = x })
	s.Run(Epoch.Add(time.Second))
	c := circuit.Cell{CircID: 1, Cmd: circuit.CmdRelay}
	l.Send(a, &c)
	n.Crash(b)
	s.Run(Epoch.Add(2 * time.Second))
	if len(rb.cells) != 0 || ra.closed != 1 || !l.Closed() {
		t.Fatalf("after crash: %d cells delivered, %d close notices", len(rb.cells), ra.closed)
	}
	var derr error
	n.Dial(a, b, func(_ *Link, err error) { derr = err })
	s.Run(Epoch.Add(3 * time.Second))
	if derr != ErrRefused {
		t.Fatalf("dial to a crashed node: %v", derr)
	}
	n.Restart(b, rb)
	n.Dial(a, b, func(_ *Link, err error) { derr = err })
	s.Run(Epoch.Add(4 * time.Second))
	if derr != nil {
		t.Fatalf("dial after restart: %v", derr)
	}
}

func TestPartitionCutsAndTimesOut(t *testing.T) {
	s, n, a, b, ra, rb := twoNodes(t, Config{Latency: [][]time.Duration{{10 * time.Millisecond}}}, 0)
	n.Dial(a, b, func(*Link, error) {})
	s.Run(Epoch.Add(time.Second))
	n.SetCut(func(x, y *Node) bool { return x != y })
	s.Run(Epoch.Add(2 * time.Second))
	if ra.closed != 1 || rb.closed != 1 {
		t.Fatalf("close notices %d, %d; want 1, 1", ra.closed, rb.closed)
	}
	var derr error
	n.Dial(a, b, func(_ *Link, err error) { derr = err })
	s.Run(Epoch.Add(time.Minute))
	if derr != ErrTimeout {
		t.Fatalf("dial across a partition: %v", derr)
	}
}
