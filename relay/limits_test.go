package relay

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/relay/metrics"
)

var (
	addrA = netip.MustParseAddr("198.51.100.1")
	addrB = netip.MustParseAddr("198.51.100.2")
)

func TestAddrCounter(t *testing.T) {
	c := newAddrCounter(2)
	if !c.Acquire(addrA) || !c.Acquire(netip.MustParseAddr("::ffff:198.51.100.1")) {
		t.Fatal("first two refused")
	}
	if c.Acquire(addrA) {
		t.Fatal("third link from one address accepted")
	}
	if !c.Acquire(addrB) {
		t.Fatal("another address refused")
	}
	c.Release(addrA)
	if !c.Acquire(addrA) {
		t.Fatal("slot not given back")
	}
	c.Release(addrA)
	c.Release(addrA)
	c.Release(addrB)
	if c.Count(addrA) != 0 || len(c.n) != 0 {
		t.Fatalf("counter not empty: %v", c.n)
	}
}

// TestCreateLimiter: the token bucket per address, with the clock passed
// in.
func TestCreateLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newCreateLimiter(2, 3) // 2 per second, bursts of 3
	for i := range 3 {
		if !l.Allow(addrA, now) {
			t.Fatalf("CREATE %d of the burst refused", i)
		}
	}
	if l.Allow(addrA, now) {
		t.Fatal("CREATE beyond the burst allowed")
	}
	if !l.Allow(addrB, now) {
		t.Fatal("another address was limited too")
	}
	if !l.Allow(addrA, now.Add(500*time.Millisecond)) {
		t.Fatal("no token after half a second at 2/s")
	}
	if l.Allow(addrA, now.Add(500*time.Millisecond)) {
		t.Fatal("two tokens after half a second at 2/s")
	}
	// Bounded table: with room for two buckets, a third active address is
	// refused until the others go idle and are forgotten.
	l = newCreateLimiter(2, 3)
	l.max = 2
	l.Allow(addrA, now)
	l.Allow(addrB, now)
	c := netip.MustParseAddr("198.51.100.3")
	if l.Allow(c, now) {
		t.Fatal("a third address got a bucket beyond the table size")
	}
	if !l.Allow(c, now.Add(l.refill()+time.Second)) {
		t.Fatal("idle buckets were not forgotten")
	}
	if l.Len() != 1 {
		t.Fatalf("%d buckets, want 1", l.Len())
	}
}

// TestBandwidthBucket: rate and burst, waits counted, unlimited when 0,
// reconfigurable.
func TestBandwidthBucket(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := metrics.New()
	b := newBandwidth(100_000, 200_000, func() time.Time { return now }, m)
	done := make(chan struct{})
	if !b.wait(done, 150_000) {
		t.Fatal("burst did not cover the first write")
	}
	close(done)
	if b.wait(done, 150_000) {
		t.Fatal("second write beyond the burst did not wait")
	}
	if metricValue(m.BucketWaits) != 1 || metricValue(m.BucketWaited) <= 0 {
		t.Fatal("wait not counted")
	}
	now = now.Add(2 * time.Second) // refilled (and the cancelled reservation returned)
	if !b.wait(done, 150_000) {
		t.Fatal("no tokens after the refill")
	}
	b.set(0, 0)
	if !b.wait(done, 1<<30) {
		t.Fatal("unlimited bucket waited")
	}
	b.set(1000, 10) // burst raised to one write batch
	if l := b.lim.Load(); l == nil || l.Burst() < writeBatch*circuit.CellSize {
		t.Fatal("burst below one write batch")
	}
}

// testSched is a link writer without a link, for queue tests.
func testSched(r *Relay) *linkSched {
	return &linkSched{r: r, done: make(chan struct{}), kick: make(chan struct{}, 1)}
}

func testCircuit(r *Relay, s *linkSched, id uint32) *circEntry {
	e := &circEntry{streams: map[uint16]*exitStream{}}
	e.prev = &linkState{sched: s, circs: map[uint32]circSide{id: {e: e, prev: true}}}
	e.prevID = id
	e.prevQ = s.newQueue(e)
	r.mu.Lock()
	r.circs[e] = struct{}{}
	r.mu.Unlock()
	return e
}

func cells(id uint32, n int) []circuit.Cell {
	out := make([]circuit.Cell, n)
	for i := range out {
		out[i] = circuit.Cell{CircID: id, Cmd: circuit.CmdRelay}
		out[i].Payload[0] = byte(i)
	}
	return out
}

// TestCircuitQueueBound: a circuit's queue for a link holds maxCircQueue
// cells; pushing more fails (the caller destroys the circuit) without
// blocking.
func TestCircuitQueueBound(t *testing.T) {
	r := newTestRelay(t, nil)
	s := testSched(r)
	e := testCircuit(r, s, 1)
	if err := s.push(e.prevQ, nil, cells(1, maxCircQueue)...); err != nil {
		t.Fatal(err)
	}
	if err := s.push(e.prevQ, nil, cells(1, 1)...); !errors.Is(err, errQueueFull) {
		t.Fatalf("push beyond the bound: %v", err)
	}
	if got, want := r.queued.Load(), int64(maxCircQueue*circuit.CellSize); got != want || e.queued.Load() != want {
		t.Fatalf("accounted %d (circuit %d), want %d", got, e.queued.Load(), want)
	}
	s.drop(e.prevQ)
	if r.queued.Load() != 0 || e.queued.Load() != 0 {
		t.Fatal("dropping the queue did not give its bytes back")
	}
}

// TestSchedulerRoundRobin: control cells first, then one cell per circuit
// in turn, so a busy circuit cannot starve a quiet one.
func TestSchedulerRoundRobin(t *testing.T) {
	r := newTestRelay(t, nil)
	s := testSched(r)
	busy, quiet := testCircuit(r, s, 1), testCircuit(r, s, 2)
	s.push(busy.prevQ, nil, cells(1, 2*writeBatch)...)
	s.push(quiet.prevQ, nil, cells(2, 3)...)
	s.control(circuit.DestroyCell(9, circuit.DestroyResourceLimit))
	batch := s.take(nil)
	if len(batch) != writeBatch {
		t.Fatalf("batch of %d, want %d", len(batch), writeBatch)
	}
	if batch[0].Cmd != circuit.CmdDestroy {
		t.Fatal("control cell not first")
	}
	var quietAt []int
	for i, c := range batch {
		if c.CircID == 2 {
			quietAt = append(quietAt, i)
		}
	}
	if len(quietAt) != 3 || quietAt[2] > 6 {
		t.Fatalf("quiet circuit's cells at %v, want within the first rounds", quietAt)
	}
	for i := 1; i < len(batch); i++ { // per-circuit order kept
		if batch[i].CircID == 1 && i > 1 {
			for j := i - 1; j > 0; j-- {
				if batch[j].CircID == 1 {
					if batch[j].Payload[0] >= batch[i].Payload[0] {
						t.Fatal("cells of one circuit reordered")
					}
					break
				}
			}
		}
	}
	want := int64((2*writeBatch + 3 + 1 - writeBatch) * circuit.CellSize)
	if r.queued.Load() != want {
		t.Fatalf("queued %d after take, want %d", r.queued.Load(), want)
	}
}

// TestOOMHandler: past the memory cap, the circuits whose oldest queued
// cell has waited longest are destroyed first (not the biggest), until the
// relay is below 3/4 of the cap.
func TestOOMHandler(t *testing.T) {
	r := newTestRelay(t, func(c *Config) { c.MaxMemory = 12 * circuit.CellSize })
	s := testSched(r)
	small, stalled, big := testCircuit(r, s, 1), testCircuit(r, s, 2), testCircuit(r, s, 3)
	s.push(small.prevQ, nil, cells(1, 1)...)
	s.push(stalled.prevQ, nil, cells(2, 6)...)
	s.push(big.prevQ, nil, cells(3, 7)...)
	// The stalled circuit's cells were queued long ago; the others' now.
	stalled.prevQ.head.added = time.Now().Add(-time.Minute).UnixNano()
	select {
	case <-r.oomKick:
	default:
		t.Fatal("passing the cap did not wake the OOM handler")
	}
	if n := r.handleOOM(); n != 1 {
		t.Fatalf("closed %d circuits, want 1", n)
	}
	if !stalled.dead || small.dead || big.dead {
		t.Fatalf("dead: small %v stalled %v big %v; want only the stalled one", small.dead, stalled.dead, big.dead)
	}
	if r.queued.Load() > int64(float64(r.cfg.MaxMemory)*oomTarget) {
		t.Fatalf("still %d bytes queued", r.queued.Load())
	}
	if metricValue(r.metrics.Refusals.WithLabelValues(metrics.RefuseOOM)) != 1 {
		t.Fatal("OOM closure not counted")
	}
	// The DESTROY for the victim went to its link's control queue.
	if b := s.take(nil); len(b) == 0 || b[0].Cmd != circuit.CmdDestroy || b[0].CircID != 2 {
		t.Fatalf("no DESTROY for the victim: %+v", b[:min(len(b), 1)])
	}
	// Among circuits queued at the same time, the biggest goes first.
	r2 := newTestRelay(t, func(c *Config) { c.MaxMemory = 12 * circuit.CellSize })
	s2 := testSched(r2)
	a, b := testCircuit(r2, s2, 1), testCircuit(r2, s2, 2)
	s2.push(a.prevQ, nil, cells(1, 4)...)
	s2.push(b.prevQ, nil, cells(2, 10)...)
	a.prevQ.head.added, b.prevQ.head.added = 1, 1
	if n := r2.handleOOM(); n != 1 || !b.dead || a.dead {
		t.Fatalf("closed %d; dead: small %v big %v; want only the big one", n, a.dead, b.dead)
	}
}

// metricValue reads a counter or gauge (one series).
func metricValue(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	(<-ch).Write(&m)
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// TestReaderWakesWriterOncePerBatch: cells a link reader queues wake the
// destination link's writer at the end of the reader's batch, once, not
// at each cell; other pushes (exit streams, handshakes) wake it at once.
func TestReaderWakesWriterOncePerBatch(t *testing.T) {
	r := newTestRelay(t, nil)
	s := testSched(r)
	e := testCircuit(r, s, 1)
	var w waker
	for i := range 100 {
		if err := s.push(e.prevQ, &w, cells(1, 1)...); err != nil {
			t.Fatal(err)
		}
		if len(s.kick) != 0 {
			t.Fatalf("writer woken at cell %d of the batch", i)
		}
	}
	w.flush()
	if len(s.kick) != 1 || len(w.scheds) != 0 {
		t.Fatalf("after flush: %d wake-ups pending, %d writers remembered; want 1 and 0", len(s.kick), len(w.scheds))
	}
	<-s.kick
	s.push(e.prevQ, nil, cells(1, 1)...)
	if len(s.kick) != 1 {
		t.Fatal("a push outside a reader batch did not wake the writer")
	}
	if got := len(s.take(nil)); got != 101 {
		t.Fatalf("writer took %d cells, want all 101 in one batch", got)
	}
}

// TestCircuitQueueOrderAcrossChunks: a queue spanning many pooled chunks
// gives its cells back in order, however pushes and takes interleave, and
// its accounting returns to zero.
func TestCircuitQueueOrderAcrossChunks(t *testing.T) {
	r := newTestRelay(t, nil)
	s := testSched(r)
	e := testCircuit(r, s, 1)
	next, want := 0, 0
	push := func(n int) {
		batch := make([]circuit.Cell, n)
		for i := range batch {
			batch[i] = circuit.Cell{CircID: 1, Cmd: circuit.CmdRelay}
			binary.BigEndian.PutUint32(batch[i].Payload[:], uint32(next))
			next++
		}
		if err := s.push(e.prevQ, nil, batch...); err != nil {
			t.Fatal(err)
		}
	}
	take := func() {
		for _, c := range s.take(nil) {
			if got := int(binary.BigEndian.Uint32(c.Payload[:])); got != want {
				t.Fatalf("cell %d came out as %d", want, got)
			}
			want++
		}
	}
	for _, n := range []int{1, chunkCells - 1, 1, 3 * chunkCells, 7, 600} {
		push(n)
		take()
	}
	for want < next {
		take()
	}
	if e.prevQ.len() != 0 || e.prevQ.head != nil || r.queued.Load() != 0 || e.queued.Load() != 0 {
		t.Fatalf("after draining: %d cells, head %v, %d bytes accounted", e.prevQ.len(), e.prevQ.head, r.queued.Load())
	}
}
