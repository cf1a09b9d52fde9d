// Package simnet is a deterministic discrete-event engine and a simulated
// network for veil: a virtual clock, a queue of events ordered by (time,
// sequence number), seeded random streams, and nodes joined by reliable
// ordered links with latency, jitter, loss, per-node uplink bandwidth,
// crashes and partitions.
//
// It is single-threaded and never reads the wall clock, never sleeps and
// never starts a goroutine: the same seed and the same calls give the
// same sequence of events, bit for bit. Time advances only when Run takes
// the next event, so idle virtual time costs nothing.
//
// The engine knows nothing of circuits beyond the circuit.Cell it carries;
// package sim/world drives veil's protocol core over it.
package simnet

import (
	"time"
)

// Epoch is the virtual time at which every simulation starts. It is the
// start of directory/dirtest's clock, so authority certificates made by
// dirtest are valid.
var Epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// Sim is the virtual clock and the event queue. The zero value is not
// usable; use New.
type Sim struct {
	now    int64 // nanoseconds since Epoch
	seq    uint64
	q      eventHeap
	seed   uint64
	events uint64 // events run
	halted bool
}

// event is one entry of the queue: a timer's callback or the delivery of
// the first cell waiting on a pipe. Exactly one of timer and pipe is set.
type event struct {
	at    int64
	seq   uint64
	timer *Timer
	pipe  *pipe
}

// Timer is a callback scheduled at a virtual time. Stop cancels it.
type Timer struct {
	fn      func()
	stopped bool
	fired   bool
}

// Stop cancels the timer; it reports whether the callback had not run yet.
// Stopping a stopped or fired timer does nothing.
func (t *Timer) Stop() bool {
	if t == nil || t.stopped || t.fired {
		return false
	}
	t.stopped = true
	return true
}

// New returns a simulation at Epoch whose random streams derive from seed.
func New(seed uint64) *Sim {
	return &Sim{seed: seed}
}

// Now is the virtual time.
func (s *Sim) Now() time.Time { return Epoch.Add(time.Duration(s.now)) }

// Elapsed is the virtual time since Epoch.
func (s *Sim) Elapsed() time.Duration { return time.Duration(s.now) }

// Seed is the seed the simulation was made with.
func (s *Sim) Seed() uint64 { return s.seed }

// Events is the number of events run so far.
func (s *Sim) Events() uint64 { return s.events }

// Pending is the number of events waiting (cancelled timers included).
func (s *Sim) Pending() int { return len(s.q) }

// After runs fn after d of virtual time (d < 0 counts as 0). Callbacks
// due at the same instant run in the order they were scheduled.
func (s *Sim) After(d time.Duration, fn func()) *Timer {
	return s.at(s.now+int64(max(d, 0)), fn)
}

// At runs fn at virtual time t, or now if t is in the past.
func (s *Sim) At(t time.Time, fn func()) *Timer {
	return s.at(max(int64(t.Sub(Epoch)), s.now), fn)
}

func (s *Sim) at(at int64, fn func()) *Timer {
	t := &Timer{fn: fn}
	s.push(event{at: at, timer: t})
	return t
}

func (s *Sim) push(e event) {
	s.seq++
	e.seq = s.seq
	s.q.push(e)
}

// Halt makes the running Run return after the current event.
func (s *Sim) Halt() { s.halted = true }

// Run runs events in (time, sequence) order until the queue is empty, Halt
// is called, or the next event is after until; the clock then stands at
// until (or at the last event, if halted). It returns the number of events
// run.
func (s *Sim) Run(until time.Time) uint64 {
	end := int64(until.Sub(Epoch))
	start := s.events
	s.halted = false
	for len(s.q) > 0 && !s.halted {
		if s.q[0].at > end {
			break
		}
		e := s.q.pop()
		s.now = e.at
		s.events++
		switch {
		case e.timer != nil:
			if !e.timer.stopped {
				e.timer.fired = true
				e.timer.fn()
			}
		case e.pipe != nil:
			e.pipe.deliver()
		}
	}
	if !s.halted && end > s.now {
		s.now = end
	}
	return s.events - start
}

// eventHeap is a binary min-heap of events by (at, seq). It stores values,
// so scheduling allocates nothing beyond the slice's growth.
type eventHeap []event

func (h eventHeap) less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}

func (h *eventHeap) push(e event) {
	*h = append(*h, e)
	q := *h
	i := len(q) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *eventHeap) pop() event {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q[n] = event{}
	q = q[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && q.less(r, l) {
			m = r
		}
		if !q.less(m, i) {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return top
}
