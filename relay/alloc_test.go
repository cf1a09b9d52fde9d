package relay

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

// TestForwardPathAllocatesNothing pins DESIGN.md's per-cell rule for the
// relay's whole forward path, not only its circuit step: a relay (in this
// process, over loopback TCP) forwards DROP cells of two circuits from a
// client link to a next hop (capacity_test.go's generator and sink), so
// every cell goes through link read and frame open, the layer, the
// circuit queue, the round robin, frame seal and link write. After a warm
// up (pools, buffers, maps at their size), forwarding 127 frames more (16,129
// cells) may allocate a few times for the runtime's own needs (timers,
// scheduler) but nothing per frame, let alone per cell.
func TestForwardPathAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	_, spec, cancel, done := startRelay(t, nil)
	defer func() { cancel(); <-done }()
	progress := sync.NewCond(new(sync.Mutex))
	sink := newCapSink(t, "127.0.0.1:0", 2, progress)
	l, err := dialRawLink("", spec.Addr.String(), spec.LinkKey)
	if err != nil {
		t.Fatal(err)
	}
	defer l.nc.Close()
	cl := &capLink{l: l}
	for i := range 2 {
		cl.circs = append(cl.circs, &capCirc{id: circuit.CircIDHighBit | uint32(i+1), cc: circuit.NewClientCircuit(time.Now)})
	}
	if err := cl.build(spec, sink.spec); err != nil {
		t.Fatal(err)
	}
	const warm, measured = 64, 127
	cl.seal(warm + measured)
	frame := len(cl.stream) / (warm + measured)
	// send writes frames [from, to) in steps of 8 frames (1,016 cells, far
	// below the circuit queues' bound) and waits until the sink has them.
	send := func(from, to int) {
		for f := from; f < to; f += 8 {
			n := min(8, to-f)
			if _, err := l.nc.Write(cl.stream[f*frame : (f+n)*frame]); err != nil {
				t.Fatal(err)
			}
			want := int64((f + n) * circuit.MaxCellsPerFrame)
			for deadline := time.Now().Add(10 * time.Second); sink.counted.Load() < want; {
				if time.Now().After(deadline) {
					t.Fatalf("sink counted %d of %d cells", sink.counted.Load(), want)
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	send(0, warm)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	send(warm, warm+measured)
	runtime.ReadMemStats(&after)
	if f := sink.failures.Load(); f > 0 {
		t.Fatalf("%d sampled frames failed", f)
	}
	allocs := after.Mallocs - before.Mallocs
	cells := measured * circuit.MaxCellsPerFrame
	t.Logf("%d allocations while forwarding %d cells in %d frames", allocs, cells, measured)
	if allocs >= measured/4 {
		t.Fatalf("%d allocations for %d frames (%d cells): the forward path allocates", allocs, measured, cells)
	}
}
