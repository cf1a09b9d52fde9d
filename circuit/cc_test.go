package circuit

import (
	"container/heap"
	"net/netip"
	"testing"
	"time"

	"github.com/veilnet/veil/crypto"
)

// A discrete-event emulation of one circuit over a path with a bottleneck
// of 100 Mbit/s and an 80 ms round trip, in virtual time: the exit sends a
// bulk stream as fast as flow control allows, the client's application
// reads at once. Nothing here depends on the speed of the machine.

type simEvent struct {
	at     time.Time
	seq    int
	toExit bool
	cell   Cell
}

type eventQueue []*simEvent

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*simEvent)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// emulateBulk returns the stream goodput in bytes per second measured over
// the second half of duration. fixedCwnd nonzero pins the window.
func emulateBulk(t *testing.T, rate float64, rtt, duration time.Duration, fixedCwnd int) float64 {
	now := time.Unix(1e9, 0)
	clock := func() time.Time { return now }
	ch := &chain{t: t, client: NewClientCircuit(clock)}
	ch.relays = append(ch.relays, newTestRelay(t, 1))
	payloads, err := ch.client.Create(fixedRand{}, ch.relays[0].spec)
	if err != nil {
		t.Fatal(err)
	}
	a, _, _ := StartCreate(&payloads[0])
	for i := 1; i < len(payloads); i++ {
		a.Add(&payloads[i])
	}
	ht, hdata := a.Message()
	exit, created, err := acceptWith(ch.relays[0], clock, ht, hdata)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.client.HandleCreated(created); err != nil {
		t.Fatal(err)
	}
	if fixedCwnd != 0 {
		exit.ep.fixedCwnd, exit.ep.cwnd, exit.ep.slowStart = fixedCwnd, fixedCwnd, false
	}
	var ca ClientActions
	var ra RelayActions
	id, err := ch.client.OpenStream("bulk", 1, &ca)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ca.ToLink {
		if err := exit.HandleForward(&c.Payload, &ra); err != nil {
			t.Fatal(err)
		}
	}
	ra.Reset()
	exit.StreamConnected(id, netip.Addr{}, &ra)
	ca.Reset()
	for _, c := range ra.ToPrev {
		if err := ch.client.HandleBackward(&c.Payload, &ca); err != nil {
			t.Fatal(err)
		}
	}

	var q eventQueue
	seq := 0
	push := func(at time.Time, toExit bool, c Cell) {
		seq++
		heap.Push(&q, &simEvent{at: at, seq: seq, toExit: toExit, cell: c})
	}
	cellTime := time.Duration(float64(CellSize*8) / rate * float64(time.Second))
	linkFree := now
	chunk := make([]byte, exit.MaxData())
	send := func() {
		for exit.CanPackage(id) {
			ra.Reset()
			if _, err := exit.PackageData(id, chunk, &ra); err != nil {
				t.Fatal(err)
			}
			for _, c := range ra.ToPrev {
				depart := linkFree
				if depart.Before(now) {
					depart = now
				}
				depart = depart.Add(cellTime)
				linkFree = depart
				push(depart.Add(rtt/2), false, c)
			}
		}
	}
	start := now
	end := start.Add(duration)
	half := start.Add(duration / 2)
	var measured int
	send()
	for q.Len() > 0 && now.Before(end) {
		ev := heap.Pop(&q).(*simEvent)
		now = ev.at
		if ev.toExit {
			ra.Reset()
			if err := exit.HandleForward(&ev.cell.Payload, &ra); err != nil {
				t.Fatal(err)
			}
			send()
			continue
		}
		ca.Reset()
		if err := ch.client.HandleBackward(&ev.cell.Payload, &ca); err != nil {
			t.Fatal(err)
		}
		for _, d := range ca.Data {
			if now.After(half) {
				measured += len(d.Data)
			}
		}
		if n := len(ca.Data); n > 0 {
			ch.client.StreamConsumed(id, n, &ca)
		}
		for _, c := range ca.ToLink {
			push(now.Add(rtt/2), true, c)
		}
	}
	return float64(measured) / (duration / 2).Seconds()
}

func acceptWith(r *testRelay, clock func() time.Time, ht HandshakeType, hdata []byte) (*RelayCircuit, *[PayloadSize]byte, error) {
	return AcceptCreate(fixedRand{}, clock, r.id, []*crypto.OnionKey{r.onion}, ht, hdata)
}

// fixedRand is a deterministic randomness source for emulations.
type fixedRand struct{}

func (fixedRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	return len(p), nil
}

// TestCongestionControlFillsALongFatPath: over 100 Mbit/s with an 80 ms
// round trip, Vegas reaches most of the path's capacity, while Tor's old
// fixed window of 1000 cells is held to about half of it by the round trip.
func TestCongestionControlFillsALongFatPath(t *testing.T) {
	const rate = 100e6 // bits per second
	rtt := 80 * time.Millisecond
	// Stream bytes per second the bottleneck could carry at best.
	capacity := rate / 8 / CellSize * float64(MaxDataSize(1))
	vegas := emulateBulk(t, rate, rtt, 20*time.Second, 0)
	fixed := emulateBulk(t, rate, rtt, 20*time.Second, 1000)
	t.Logf("capacity %.2f MB/s; Vegas %.2f MB/s (%.0f%%); fixed 1000-cell window %.2f MB/s (%.0f%%)",
		capacity/1e6, vegas/1e6, 100*vegas/capacity, fixed/1e6, 100*fixed/capacity)
	if vegas < 0.85*capacity {
		t.Errorf("Vegas reached %.0f%% of the path's capacity, want at least 85%%", 100*vegas/capacity)
	}
	if fixed > 0.6*capacity {
		t.Errorf("a fixed window reached %.0f%%: the emulated path is not long and fat enough to show anything", 100*fixed/capacity)
	}
}
