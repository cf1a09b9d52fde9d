package circuit

import (
	"crypto/rand"
	"runtime"
	"testing"
	"time"
)

// TestRelayCircuitMemory pins what a relay circuit holds (issue 8's memory
// per idle circuit): the live heap of 1,000 accepted circuits, per
// circuit, before any cell (the layer keys not yet expanded), after a
// BEGIN forward and an END back (both keys expanded), and after
// ReleaseIdle across an idle period. Each figure is the heap with the
// circuits minus the heap once they are dropped, so nothing else the test
// holds is counted.
func TestRelayCircuitMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes what allocations weigh")
	}
	const n = 1000
	r := newTestRelay(t, 1)
	rcs := make([]*RelayCircuit, n)
	begins := make([]Cell, n) // each client's BEGIN, sealed before the clients go
	ids := make([]uint16, n)
	for i := range rcs {
		cc := NewClientCircuit(time.Now)
		p, err := cc.Create(rand.Reader, r.spec)
		if err != nil {
			t.Fatal(err)
		}
		rc, created, err := r.accept(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := cc.HandleCreated(created); err != nil {
			t.Fatal(err)
		}
		var ca ClientActions
		if ids[i], err = cc.OpenStream("example.com", 80, &ca); err != nil {
			t.Fatal(err)
		}
		rcs[i], begins[i] = rc, ca.ToLink[0]
	}
	live := func() float64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapAlloc)
	}
	fresh := live()
	var ra RelayActions
	for i, rc := range rcs {
		ra.Reset()
		if err := rc.HandleForward(&begins[i].Payload, &ra); err != nil || len(ra.Begins) != 1 {
			t.Fatalf("BEGIN: %v (%d begins)", err, len(ra.Begins))
		}
		ra.Reset()
		if err := rc.StreamEnded(ids[i], EndMisc, &ra); err != nil || len(ra.ToPrev) != 1 {
			t.Fatalf("END: %v (%d cells)", err, len(ra.ToPrev))
		}
	}
	ra = RelayActions{}
	used := live()
	for _, rc := range rcs {
		rc.ReleaseIdle() // the period of the BEGIN and END: kept
		rc.ReleaseIdle() // an idle period: dropped
	}
	released := live()
	runtime.KeepAlive(rcs)
	rcs = nil
	none := live()
	runtime.KeepAlive(begins)
	fresh, used, released = (fresh-none)/n, (used-none)/n, (released-none)/n
	t.Logf("heap per relay circuit: %.0f bytes before any cell, %.0f after a cell each way, %.0f after an idle period", fresh, used, released)
	if fresh > 700 {
		t.Errorf("a circuit that carried no cell holds %.0f bytes, want at most 700 (no expanded layer keys)", fresh)
	}
	if released > 900 {
		t.Errorf("an idle circuit holds %.0f bytes after ReleaseIdle, want at most 900", released)
	}
	if used > 2600 {
		t.Errorf("a circuit in use holds %.0f bytes, want at most 2,600", used)
	}
}
