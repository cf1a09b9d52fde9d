package relay

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/internal/linkio"
	"github.com/veilnet/veil/relay/metrics"
)

// The outbound side of a link. A link reader appends the cells a circuit
// produced to that circuit's queue for the destination link and goes on;
// at the end of each batch of cells it read (one read from its socket) it
// turns to each link it gave cells to, once (a waker), and writes one
// batch of that link's queued cells itself if it can do so without
// waiting (writeInline): no other writer busy, bandwidth tokens at hand,
// no unwritten bytes before them, and a socket that takes them
// (linkio.Conn.TryWriteBatch). Otherwise, and for whatever is left, it
// wakes the link's writer goroutine (linkSched.run), which may wait for
// tokens and for the peer. At a moderate rate this saves a hand-off
// between goroutines (and between threads) per batch, about a quarter of
// a relay's CPU per relayed byte here (docs/benchmarks.md); under full
// load the writer goroutine is mostly busy, readers only queue, and
// reading and writing stay on separate cores.
//
// Whoever writes holds the link's writer token (busy): it takes one cell
// from each circuit with cells waiting in turn (round robin, so circuits
// share a link fairly; a circuit alone in the round gives all it has at
// once), encoding them straight into a linkio.Batch of up
// to two full frames, and seals and writes the batch itself: one write
// per 254 cells when the traffic is there. Releasing the token wakes the
// writer goroutine if cells or unwritten bytes remain, so no cell waits
// for a wake-up that never comes. A slow peer stalls only that link's
// writer goroutine; its circuits' queues grow up to maxCircQueue, beyond
// which the circuit is destroyed, and all queued bytes count against the
// relay's memory cap.

// Queue limits.
const (
	// maxCircQueue bounds one circuit's cells waiting for one link:
	// congestion control keeps at most MaxCwnd cells in flight, plus
	// some room for SENDMEs, XON/XOFF and handshake cells. A circuit
	// that overflows it is destroyed (RESOURCELIMIT).
	maxCircQueue = circuit.MaxCwnd + 512
	// maxCtrlQueue bounds the link-level cells (refusals, DESTROYs for
	// circuits that are gone) waiting on one link. A peer that makes us
	// queue more than that, without reading, loses the link.
	maxCtrlQueue = 4096
	// writeBatch is the most cells one writer pass takes: one bandwidth
	// reservation, one linkio.Batch, one write.
	writeBatch = linkio.BatchCells
)

var (
	errQueueFull = errors.New("relay: circuit queue full")
	errCtrlFull  = errors.New("relay: link control queue full")
)

// chunkCells is the size of the pooled chunks circuit queues are made of:
// a queue is a list of chunks, so it grows and shrinks without copying
// and the per-cell path allocates nothing once the pool is warm.
const chunkCells = 32

// cellChunk is a piece of a circuit queue: cells[head:tail] are queued.
type cellChunk struct {
	cells      [chunkCells]circuit.Cell
	head, tail int
	next       *cellChunk
	// added is when the chunk's first cell was queued (UnixNano): the
	// oldest cell of a queue was queued no earlier than its head chunk's
	// added, which is what the OOM handler orders circuits by (oom.go).
	// One clock read per chunkCells cells.
	added int64
}

var chunkPool = sync.Pool{New: func() any { return new(cellChunk) }}

// batchPool holds the write buffers of link writers: a link holds one only
// while it has cells to write.
var batchPool = sync.Pool{New: func() any { return linkio.NewBatch() }}

// cellQueue is one circuit's cells waiting for one link. Its fields are
// guarded by the owning linkSched's mu.
type cellQueue struct {
	e          *circEntry
	head, tail *cellChunk
	n          int
	active     bool // in the scheduler's ring
	gone       bool // dropped: the circuit is dead
}

func (q *cellQueue) len() int { return q.n }

// add appends a copy of c.
func (q *cellQueue) add(c *circuit.Cell) {
	if q.tail == nil || q.tail.tail == chunkCells {
		k := chunkPool.Get().(*cellChunk)
		k.head, k.tail, k.next = 0, 0, nil
		k.added = time.Now().UnixNano()
		if q.tail == nil {
			q.head = k
		} else {
			q.tail.next = k
		}
		q.tail = k
	}
	q.tail.cells[q.tail.tail] = *c
	q.tail.tail++
	q.n++
}

// front is the oldest cell; q must not be empty.
func (q *cellQueue) front() *circuit.Cell { return &q.head.cells[q.head.head] }

// pop forgets the oldest cell, giving an emptied chunk back.
func (q *cellQueue) pop() {
	k := q.head
	k.head++
	q.n--
	if k.head == k.tail {
		q.head = k.next
		if q.head == nil {
			q.tail = nil
		}
		chunkPool.Put(k)
	}
}

// release empties q and gives its chunks back.
func (q *cellQueue) release() {
	for k := q.head; k != nil; {
		next := k.next
		chunkPool.Put(k)
		k = next
	}
	q.head, q.tail, q.n = nil, nil, 0
}

// linkSched is a link's writer.
type linkSched struct {
	r    *Relay
	link *linkio.Conn
	done <-chan struct{} // link.Done()
	mu   sync.Mutex
	ctrl []circuit.Cell
	// ring holds the queues with cells, in turn: ring[ringHead:].
	ring     []*cellQueue
	ringHead int
	// busy is the writer token: someone (the writer goroutine or a
	// reader in writeInline) is taking and writing cells. Guarded by mu.
	busy bool
	kick chan struct{}
}

func newLinkSched(r *Relay, link *linkio.Conn) *linkSched {
	return &linkSched{r: r, link: link, done: link.Done(), kick: make(chan struct{}, 1)}
}

func (s *linkSched) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// waker collects the link writers a reader gave cells to during one batch
// and wakes each once at its end. It belongs to one reader goroutine.
type waker struct {
	scheds []*linkSched
}

// add remembers s (a reader feeds few links: a linear scan is enough).
func (w *waker) add(s *linkSched) {
	for _, x := range w.scheds {
		if x == s {
			return
		}
	}
	w.scheds = append(w.scheds, s)
}

// flush writes to (or wakes the writer of) every link collected since the
// last flush.
func (w *waker) flush() {
	for i, s := range w.scheds {
		s.writeInline()
		w.scheds[i] = nil
	}
	w.scheds = w.scheds[:0]
}

// newQueue returns an empty queue of e's cells for this link.
func (s *linkSched) newQueue(e *circEntry) *cellQueue { return &cellQueue{e: e} }

// ringPush appends q to the round robin. s.mu is held.
func (s *linkSched) ringPush(q *cellQueue) {
	if len(s.ring) == cap(s.ring) && s.ringHead > 0 {
		n := copy(s.ring, s.ring[s.ringHead:])
		clear(s.ring[n:])
		s.ring, s.ringHead = s.ring[:n], 0
	}
	s.ring = append(s.ring, q)
}

// push appends cells to q and wakes the writer, at once if w is nil or
// at w's next flush. It never blocks; errQueueFull means q would exceed
// maxCircQueue and the caller must destroy the circuit.
func (s *linkSched) push(q *cellQueue, w *waker, cells ...circuit.Cell) error {
	if len(cells) == 0 {
		return nil
	}
	s.mu.Lock()
	if q.gone {
		s.mu.Unlock()
		return nil
	}
	if q.len()+len(cells) > maxCircQueue {
		s.mu.Unlock()
		return errQueueFull
	}
	for i := range cells {
		q.add(&cells[i])
	}
	if !q.active {
		q.active = true
		s.ringPush(q)
	}
	s.mu.Unlock()
	s.r.account(q.e, int64(len(cells)*circuit.CellSize))
	if w != nil {
		w.add(s)
	} else {
		s.wake()
	}
	return nil
}

// control queues a link-level cell. It never blocks; a full control queue
// closes the link.
func (s *linkSched) control(c circuit.Cell) error {
	select {
	case <-s.done:
		return linkio.ErrClosed
	default:
	}
	s.mu.Lock()
	if len(s.ctrl) >= maxCtrlQueue {
		s.mu.Unlock()
		if s.link != nil {
			s.link.Close()
		}
		return errCtrlFull
	}
	s.ctrl = append(s.ctrl, c)
	s.mu.Unlock()
	s.r.account(nil, circuit.CellSize)
	s.wake()
	return nil
}

// oldest returns when q's oldest queued cell was queued (to a chunk's
// precision), or false if q is empty.
func (s *linkSched) oldest(q *cellQueue) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q.gone || q.head == nil {
		return 0, false
	}
	return q.head.added, true
}

// drop discards q's cells; later pushes are ignored.
func (s *linkSched) drop(q *cellQueue) {
	s.mu.Lock()
	n := q.len()
	q.gone = true
	q.release()
	s.mu.Unlock()
	s.r.account(q.e, -int64(n*circuit.CellSize))
}

// takeFunc passes up to max cells to put, in the order they are to be
// written: control cells first, then one cell per active circuit queue
// in turn. put runs under s.mu and must copy the cell. It returns how
// many cells it passed.
func (s *linkSched) takeFunc(max int, put func(*circuit.Cell)) int {
	s.mu.Lock()
	n := min(len(s.ctrl), max)
	for i := range n {
		put(&s.ctrl[i])
	}
	s.ctrl = s.ctrl[n:]
	if len(s.ctrl) == 0 {
		s.ctrl = nil
	}
	for n < max && s.ringHead < len(s.ring) {
		q := s.ring[s.ringHead]
		s.ring[s.ringHead] = nil
		s.ringHead++
		if q.gone || q.len() == 0 {
			q.active = false
			continue
		}
		// One cell per circuit per turn; a circuit alone in the ring
		// has no one to take turns with and gives all it can at once.
		k := 1
		if s.ringHead == len(s.ring) {
			k = min(q.len(), max-n)
		}
		for range k {
			put(q.front())
			q.pop()
		}
		n += k
		s.r.accountCirc(q.e, -int64(k*circuit.CellSize))
		if q.len() > 0 {
			s.ringPush(q)
		} else {
			q.active = false
		}
	}
	if s.ringHead == len(s.ring) {
		s.ring, s.ringHead = s.ring[:0], 0
	}
	s.mu.Unlock()
	s.r.queued.Add(-int64(n * circuit.CellSize))
	return n
}

// take appends up to writeBatch cells to out (tests and benchmarks; the
// writer encodes straight into its batch).
func (s *linkSched) take(out []circuit.Cell) []circuit.Cell {
	s.takeFunc(writeBatch, func(c *circuit.Cell) { out = append(out, *c) })
	return out
}

// acquire takes the writer token if it is free.
func (s *linkSched) acquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy {
		return false
	}
	s.busy = true
	return true
}

// release gives the writer token back and wakes the writer goroutine if
// cells or unwritten bytes remain: pushes that came while the token was
// held woke nobody who could write.
func (s *linkSched) release() {
	s.mu.Lock()
	s.busy = false
	pending := len(s.ctrl) > 0 || s.ringHead < len(s.ring)
	s.mu.Unlock()
	if pending || (s.link != nil && s.link.HasTail()) {
		s.wake()
	}
}

// takeBatch fills b with up to writeBatch cells (takeFunc's order).
func (s *linkSched) takeBatch(b *linkio.Batch) int {
	return s.takeFunc(writeBatch, func(c *circuit.Cell) { b.Add(c) })
}

// wrote counts n cells written.
func (s *linkSched) wrote(n int) {
	s.r.metrics.CellsWritten.Add(float64(n))
	s.r.metrics.BytesWritten.Add(float64(n * circuit.CellSize))
}

// writeInline writes one batch of the link's queued cells from the
// calling goroutine if that needs no waiting (see the top of this file),
// and leaves the rest to the writer goroutine.
func (s *linkSched) writeInline() {
	if s.link == nil { // a scheduler without a link (tests)
		s.wake()
		return
	}
	if !s.acquire() {
		return // the token holder takes these cells or wakes the writer
	}
	defer s.release()
	if s.link.HasTail() || !s.r.bw.ready(writeBatch*circuit.CellSize) {
		return // release wakes the writer goroutine, which may wait
	}
	b := batchPool.Get().(*linkio.Batch)
	defer batchPool.Put(b)
	n := s.takeBatch(b)
	if n == 0 {
		return
	}
	s.r.bw.take(n * circuit.CellSize)
	if _, err := s.link.TryWriteBatch(b); err != nil {
		return // the link is closed; its writer goroutine discards the rest
	}
	s.wrote(n) // written or kept by the link, which writes them first
}

// run is the link's writer goroutine: woken, it writes queued cells until
// none are left (waiting for bandwidth tokens and for the peer as
// needed), until the link closes.
func (s *linkSched) run() {
	for {
		select {
		case <-s.kick:
		case <-s.done:
			s.discard()
			return
		}
		if !s.writeAll() {
			s.discard()
			return
		}
	}
}

// writeAll writes whatever is queued, and what TryWriteBatch left, unless
// another writer holds the token (which then wakes us if it leaves
// anything). It reports false when the link failed.
func (s *linkSched) writeAll() bool {
	if !s.acquire() {
		return true
	}
	defer s.release()
	if s.link.HasTail() && s.link.FlushTail() != nil {
		return false
	}
	b := batchPool.Get().(*linkio.Batch)
	defer batchPool.Put(b) // an idle link holds no write buffer
	for {
		n := s.takeBatch(b)
		if n == 0 {
			return true
		}
		if !s.r.bw.wait(s.done, n*circuit.CellSize) || s.link.WriteBatch(b) != nil {
			b.Reset()
			return false
		}
		s.wrote(n)
	}
}

// discard forgets everything still queued when the link is gone.
func (s *linkSched) discard() {
	s.mu.Lock()
	ring, nctrl := s.ring[s.ringHead:], len(s.ctrl)
	s.ring, s.ringHead, s.ctrl = nil, 0, nil
	s.mu.Unlock()
	s.r.account(nil, -int64(nctrl*circuit.CellSize))
	for _, q := range ring {
		s.drop(q)
	}
}

// bandwidth is the relay's token bucket for relayed bytes. A nil limiter
// means unlimited.
type bandwidth struct {
	lim *atomic.Pointer[rate.Limiter]
	now func() time.Time
	m   *metrics.Metrics
}

func newBandwidth(ratePerSec, burst int64, now func() time.Time, m *metrics.Metrics) *bandwidth {
	b := &bandwidth{lim: new(atomic.Pointer[rate.Limiter]), now: now, m: m}
	b.set(ratePerSec, burst)
	return b
}

// set changes rate and burst (bytes per second, bytes); rate 0 means
// unlimited. Burst is raised to at least one write batch.
func (b *bandwidth) set(ratePerSec, burst int64) {
	if ratePerSec <= 0 {
		b.lim.Store(nil)
		return
	}
	burst = max(burst, ratePerSec, writeBatch*circuit.CellSize)
	if l := b.lim.Load(); l != nil {
		l.SetLimitAt(b.now(), rate.Limit(ratePerSec))
		l.SetBurstAt(b.now(), int(burst))
		return
	}
	b.lim.Store(rate.NewLimiter(rate.Limit(ratePerSec), int(burst)))
}

// ready reports whether n bytes' tokens (at most the burst) are in the
// bucket now.
func (b *bandwidth) ready(n int) bool {
	l := b.lim.Load()
	return l == nil || l.TokensAt(b.now()) >= float64(min(n, l.Burst()))
}

// take takes n tokens without waiting, after ready. If another writer took
// tokens in between, the bucket goes into debt by less than a batch, which
// later writers wait off: the rate holds over time.
func (b *bandwidth) take(n int) {
	if l := b.lim.Load(); l != nil {
		l.ReserveN(b.now(), min(n, l.Burst()))
	}
}

// wait takes n tokens, sleeping if the bucket is short, and reports false
// if done closed first. n must not exceed the burst (a write batch or a
// stream chunk does not).
func (b *bandwidth) wait(done <-chan struct{}, n int) bool {
	l := b.lim.Load()
	if l == nil {
		return true
	}
	now := b.now()
	res := l.ReserveN(now, min(n, l.Burst()))
	if !res.OK() {
		return true // cannot happen: n is capped at the burst
	}
	d := res.DelayFrom(now)
	if d <= 0 {
		return true
	}
	b.m.BucketWaits.Inc()
	b.m.BucketWaited.Add(d.Seconds())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		res.CancelAt(b.now())
		return false
	}
}
