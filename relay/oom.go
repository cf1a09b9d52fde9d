package relay

import (
	"context"
	"slices"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/relay/metrics"
)

// The memory cap: every cell queued for a link and every byte of stream
// data queued for an exit target counts in r.queued (and in its
// circuit's queued). When the total passes MaxMemory, the OOM handler
// destroys the circuits holding the most until the total is below
// oomTarget of the cap, as Tor's OOM handler does with circuit queues.

// oomTarget is the fraction of MaxMemory the OOM handler frees down to.
const oomTarget = 0.75

// account adds delta queued bytes to e (may be nil) and the relay.
func (r *Relay) account(e *circEntry, delta int64) {
	if e != nil {
		e.queued.Add(delta)
	}
	n := r.queued.Add(delta)
	r.metrics.QueuedBytes.Set(float64(n))
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

// handleOOM closes the circuits with the most queued bytes until the
// relay is below oomTarget of MaxMemory. It returns how many it closed.
func (r *Relay) handleOOM() int {
	if r.queued.Load() <= r.cfg.MaxMemory {
		return 0
	}
	type victim struct {
		e *circEntry
		n int64
	}
	r.mu.Lock()
	vs := make([]victim, 0, len(r.circs))
	for e := range r.circs {
		if n := e.queued.Load(); n > 0 {
			vs = append(vs, victim{e, n})
		}
	}
	r.mu.Unlock()
	slices.SortFunc(vs, func(a, b victim) int {
		switch {
		case a.n > b.n:
			return -1
		case a.n < b.n:
			return 1
		}
		return 0
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
	r.log.Warn("memory cap reached: closed the circuits holding the most queued data",
		"circuits", closed, "queued_bytes", r.queued.Load(), "max_memory", r.cfg.MaxMemory)
	return closed
}
