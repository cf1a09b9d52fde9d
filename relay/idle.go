package relay

import (
	"context"
	"time"
)

// DefaultIdleLinkTimeout is how long a link may sit with no circuit and no
// cell before the relay closes it. Clients open links to their guards and
// keep them while they have circuits; a link nobody uses only holds a
// socket, a goroutine pair and a queue.
const DefaultIdleLinkTimeout = 3 * time.Minute

// idleLoop closes idle links until ctx is done. It checks every quarter of
// the timeout (at most once a second), all links against one reading of
// the clock.
func (r *Relay) idleLoop(ctx context.Context) {
	timeout := r.cfg.IdleLinkTimeout
	if timeout < 0 {
		return
	}
	tick := max(timeout/4, 10*time.Millisecond)
	tick = min(tick, time.Second)
	every(ctx, tick, func() { r.closeIdleLinks(r.cfg.Now(), timeout) })
}

// every runs f every d until ctx is done.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f()
	}
}

// closeIdleLinks closes every link with no circuit, no CREATE in progress
// and no cell since now-timeout. It returns how many it closed.
func (r *Relay) closeIdleLinks(now time.Time, timeout time.Duration) int {
	r.mu.Lock()
	links := make([]*linkState, 0, len(r.links))
	for _, ls := range r.links {
		links = append(links, ls)
	}
	r.mu.Unlock()
	closed := 0
	for _, ls := range links {
		ls.mu.Lock()
		idle := len(ls.circs) == 0 && len(ls.pending) == 0 &&
			now.Sub(time.Unix(0, ls.active.Load())) > timeout
		ls.mu.Unlock()
		if idle {
			ls.link.Close()
			closed++
		}
	}
	return closed
}

// DefaultKeyReleasePeriod is how often the relay drops the expanded layer keys
// (AES-GCM state, about 1.5 KiB) of circuits that carried no cell for a
// whole period; such a circuit keeps only its key bytes and expands them
// again at its next cell (about a microsecond). Most circuits through a
// relay are idle most of the time.
const DefaultKeyReleasePeriod = 10 * time.Second

// keyReleaseLoop releases idle circuits' layer keys every
// Config.KeyReleasePeriod until ctx is done.
func (r *Relay) keyReleaseLoop(ctx context.Context) {
	if r.cfg.KeyReleasePeriod < 0 {
		return
	}
	every(ctx, r.cfg.KeyReleasePeriod, func() { r.releaseIdleKeys() })
}

// releaseIdleKeys asks every circuit to drop its expanded layer keys if
// it carried no cell since the last call, and returns how many did.
func (r *Relay) releaseIdleKeys() int {
	r.mu.Lock()
	circs := make([]*circEntry, 0, len(r.circs))
	for e := range r.circs {
		circs = append(circs, e)
	}
	r.mu.Unlock()
	released := 0
	for _, e := range circs {
		e.mu.Lock()
		if !e.dead && e.rc.ReleaseIdle() {
			released++
		}
		e.mu.Unlock()
	}
	return released
}
