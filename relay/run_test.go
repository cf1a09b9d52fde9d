package relay

import (
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

// TestLinkFailureInsideARun: a link reader handles consecutive cells of one
// circuit as a run, holding the circuit's lock until the read is done
// (circuits.go). When the same read also holds a frame that fails to open,
// the reader stops in the middle of the run; it must still queue the run's
// cells and release the circuit, or tearing down the link's circuits would
// wait for that lock forever. One write carries a frame of DROP cells for a
// built circuit and a forged frame after it; the relay must close the link
// and destroy the circuit.
func TestLinkFailureInsideARun(t *testing.T) {
	r, spec, cancel, done := startRelay(t, nil)
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the relay did not stop: a goroutine is stuck on a circuit lock")
		}
	}()
	sink := newCapSink(t, "127.0.0.1:0", 1, sync.NewCond(new(sync.Mutex)))
	l, err := dialRawLink("", spec.Addr.String(), spec.LinkKey)
	if err != nil {
		t.Fatal(err)
	}
	defer l.nc.Close()
	c := &capCirc{id: circuit.CircIDHighBit | 1, cc: circuit.NewClientCircuit(time.Now)}
	cl := &capLink{l: l, circs: []*capCirc{c}}
	if err := cl.build(spec, sink.spec); err != nil {
		t.Fatal(err)
	}
	if n := r.circuitCount(); n != 1 {
		t.Fatalf("relay has %d circuits after the build, want 1", n)
	}
	cells := make([]circuit.Cell, 4)
	for i := range cells {
		c.acts.Reset()
		if err := c.cc.SendDrop(&c.acts); err != nil {
			t.Fatal(err)
		}
		cells[i] = c.acts.ToLink[0]
		cells[i].CircID = c.id
	}
	stream := l.appendFrame(nil, cells[:3])
	forged := l.appendFrame(nil, cells[3:])
	forged[len(forged)-1] ^= 1 // the frame's tag no longer matches
	if _, err := l.nc.Write(append(stream, forged...)); err != nil {
		t.Fatal(err)
	}
	if !closedByPeer(l.nc, 10*time.Second) {
		t.Fatal("the relay kept a link whose frame failed to open")
	}
	for deadline := time.Now().Add(10 * time.Second); r.circuitCount() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the circuit of the failed link is still open (%d circuits): its run kept its lock", r.circuitCount())
		}
	}
}
