package relay

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/relay/metrics"
)

// The memory cap: every cell queued for a link and every byte of stream
// data queued for an exit target counts in r.queued (and in its
// circuit's queued). When the total passes MaxMemory, the OOM handler
// destroys circuits until the total is below oomTarget of the cap,
// those whose oldest queued cell has waited longest first, as Tor's
// OOM handler does (circuits_handle_oom orders by the age of the oldest
// queued cell). Not by size: a slow-read attacker's stalled circuits
// each hold at most a congestion window, while an honest bulk download
// that is moving can briefly hold more than any one of them; ordering by
// size killed the honest download (relay/slowpeer_test.go). A circuit
// whose bytes wait only in exit buffers counts as the youngest.

// oomTarget is the fraction of MaxMemory the OOM handler frees down to.
const oomTarget = 0.75

// account adds delta queued bytes to e (may be nil) and the relay.
func (r *Relay) account(e *circEntry, delta int64) {
	if e != nil {
		e.queued.Add(delta)
	}
	n := r.queued.Add(delta)
	if delta > 0 && n > r.cfg.MaxMemory {
		select {
		case r.oomKick <- struct{}{}:
		default:
		}
	}
}

// accountCirc moves delta bytes in e's count only (the relay's total is
// adjusted by the caller in one step).
func (r *Relay) accountCirc(e *circEntry, delta int64) {
	if e != nil {
		e.queued.Add(delta)
	}
}

// oomLoop runs the OOM handler whenever the cap is passed.
func (r *Relay) oomLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.oomKick:
			r.handleOOM()
		}
	}
}

// handleOOM closes circuits, oldest queued cell first, until the relay
// is below oomTarget of MaxMemory. It returns how many it closed.
func (r *Relay) handleOOM() int {
	if r.queued.Load() <= r.cfg.MaxMemory {
		return 0
	}
	type victim struct {
		e      *circEntry
		n      int64
		oldest int64 // UnixNano of its oldest queued cell
	}
	r.mu.Lock()
	vs := make([]victim, 0, len(r.circs))
	for e := range r.circs {
		if n := e.queued.Load(); n > 0 {
			vs = append(vs, victim{e: e, n: n})
		}
	}
	r.mu.Unlock()
	now := time.Now().UnixNano()
	for i := range vs {
		vs[i].oldest = circOldest(vs[i].e, now)
	}
	slices.SortFunc(vs, func(a, b victim) int {
		if c := cmp.Compare(a.oldest, b.oldest); c != 0 {
			return c
		}
		return cmp.Compare(b.n, a.n)
	})
	target := int64(float64(r.cfg.MaxMemory) * oomTarget)
	closed := 0
	for _, v := range vs {
		if r.queued.Load() <= target {
			break
		}
		r.metrics.Refuse(metrics.RefuseOOM)
		r.destroy(v.e, circuit.DestroyResourceLimit, nil)
		closed++
	}
	r.log.Warn("memory cap reached: closed the circuits whose queued data waited longest",
		"circuits", closed, "queued_bytes", r.queued.Load(), "max_memory", r.cfg.MaxMemory)
	return closed
}

// circOldest is when e's oldest queued cell was queued, or now if none is
// (its bytes wait in exit buffers only).
func circOldest(e *circEntry, now int64) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	oldest := now
	for _, side := range [...]struct {
		ls *linkState
		q  *cellQueue
	}{{e.prev, e.prevQ}, {e.next, e.nextQ}} {
		if side.ls == nil || side.q == nil {
			continue
		}
		if t, ok := side.ls.sched.oldest(side.q); ok && t < oldest {
			oldest = t
		}
	}
	return oldest
}
