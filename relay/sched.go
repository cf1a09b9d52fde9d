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

// The outbound side of a link. A link reader never writes to a link: it
// appends the cells a circuit produced to that circuit's queue for the
// destination link and returns at once. Each link has one writer
// goroutine (linkSched.run) that takes one cell from each circuit with
// cells waiting in turn (round robin, so circuits share a link fairly),
// waits for bandwidth tokens and hands the batch to linkio. A full linkio
// queue (a slow peer) stalls only that link's writer; its circuits' queues
// grow up to maxCircQueue, beyond which the circuit is destroyed, and all
// queued bytes count against the relay's memory cap.

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
	// writeBatch is the most cells one writer pass takes (one bandwidth
	// reservation; linkio batches them into one frame).
	writeBatch = 32
)

var (
	errQueueFull = errors.New("relay: circuit queue full")
	errCtrlFull  = errors.New("relay: link control queue full")
)

// chunkCells is the size of the pooled backing arrays of circuit queues:
// a lightly loaded circuit's queue lives in one pooled chunk, so the
// per-cell path allocates nothing; a busy one grows beyond it by append.
const chunkCells = 16

// chunkPool holds *[]circuit.Cell of capacity chunkCells.
var chunkPool = sync.Pool{New: func() any {
	s := make([]circuit.Cell, 0, chunkCells)
	return &s
}}

// cellQueue is one circuit's cells waiting for one link. Its fields are
// guarded by the owning linkSched's mu.
type cellQueue struct {
	e      *circEntry
	cells  []circuit.Cell
	chunk  *[]circuit.Cell // the pooled array cells started in, or nil
	head   int
	active bool // in the scheduler's ring
	gone   bool // dropped: the circuit is dead
}

func (q *cellQueue) len() int { return len(q.cells) - q.head }

// release empties q and gives its pooled chunk back.
func (q *cellQueue) release() {
	if q.chunk != nil {
		chunkPool.Put(q.chunk)
	}
	q.cells, q.chunk, q.head = nil, nil, 0
}

// linkSched is a link's writer.
type linkSched struct {
	r    *Relay
	link *linkio.Conn
	done <-chan struct{} // link.Done()
	mu   sync.Mutex
	ctrl []circuit.Cell
	ring []*cellQueue // queues with cells; run takes from ring[0] onwards
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

// newQueue returns an empty queue of e's cells for this link.
func (s *linkSched) newQueue(e *circEntry) *cellQueue { return &cellQueue{e: e} }

// push appends cells to q. It never blocks; errQueueFull means q would
// exceed maxCircQueue and the caller must destroy the circuit.
func (s *linkSched) push(q *cellQueue, cells ...circuit.Cell) error {
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
	if q.head > 0 && q.head == len(q.cells) {
		q.cells, q.head = q.cells[:0], 0
	}
	if q.cells == nil {
		q.chunk = chunkPool.Get().(*[]circuit.Cell)
		q.cells = (*q.chunk)[:0]
	}
	q.cells = append(q.cells, cells...)
	if !q.active {
		q.active = true
		s.ring = append(s.ring, q)
	}
	s.mu.Unlock()
	s.r.account(q.e, int64(len(cells)*circuit.CellSize))
	s.wake()
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

// drop discards q's cells; later pushes are ignored.
func (s *linkSched) drop(q *cellQueue) {
	s.mu.Lock()
	n := q.len()
	q.gone = true
	q.release()
	s.mu.Unlock()
	s.r.account(q.e, -int64(n*circuit.CellSize))
}

// take moves up to writeBatch cells into out: control cells first, then
// one cell per active circuit queue in turn.
func (s *linkSched) take(out []circuit.Cell) []circuit.Cell {
	s.mu.Lock()
	n := min(len(s.ctrl), writeBatch)
	out = append(out, s.ctrl[:n]...)
	s.ctrl = s.ctrl[n:]
	if len(s.ctrl) == 0 {
		s.ctrl = nil
	}
	for len(out) < writeBatch && len(s.ring) > 0 {
		q := s.ring[0]
		s.ring = s.ring[1:]
		if q.gone || q.len() == 0 {
			q.active = false
			continue
		}
		out = append(out, q.cells[q.head]) // a Cell holds no pointers: no need to clear the slot
		q.head++
		s.r.accountCirc(q.e, -circuit.CellSize)
		if q.len() > 0 {
			s.ring = append(s.ring, q)
		} else {
			q.active = false
			q.release() // give the memory back
		}
	}
	if len(s.ring) == 0 {
		s.ring = nil
	}
	s.mu.Unlock()
	s.r.queued.Add(-int64(len(out) * circuit.CellSize))
	return out
}

// run writes queued cells until the link closes.
func (s *linkSched) run() {
	batch := make([]circuit.Cell, 0, writeBatch)
	m := s.r.metrics
	for {
		batch = s.take(batch[:0])
		if len(batch) == 0 {
			select {
			case <-s.kick:
				continue
			case <-s.done:
				s.discard()
				return
			}
		}
		if !s.r.bw.wait(s.done, len(batch)*circuit.CellSize) {
			s.discard()
			return
		}
		for i := range batch {
			if s.link.Send(&batch[i]) != nil {
				s.discard()
				return
			}
		}
		m.CellsWritten.Add(float64(len(batch)))
		m.BytesWritten.Add(float64(len(batch) * circuit.CellSize))
	}
}

// discard forgets everything still queued when the link is gone.
func (s *linkSched) discard() {
	s.mu.Lock()
	ring, nctrl := s.ring, len(s.ctrl)
	s.ring, s.ctrl = nil, nil
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
