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
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.closeIdleLinks(r.cfg.Now(), timeout)
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
