package authority

import (
	"context"
	"time"
)

// The early first round (Config.EarlyRelays). A new network otherwise
// waits for the first aligned round whose vote time is still ahead: up to
// an interval plus both delays. Instead, each authority that has not yet
// published votes, as soon as enough relays passed its reachability test,
// for the round already under way: the latest aligned valid-after VA <=
// now, whose consensus is valid at once. Authorities started together
// pick the same VA; one that is not ready in time simply joins the regular
// schedule. The round after VA is joined even when its vote time has
// passed (loop), so the early consensus is followed without a gap. Nothing is relaxed: the consensus still needs more than half
// of the votes and of the signatures, and a relay is still Running only
// after a completed link handshake.
//
// A vote may not be dated after its valid-after (directory.Vote), so the
// early vote is dated VA; the reachability results it lists are newer
// than that, never older.

// earlyPoll bounds how long the early round sleeps between checks of the
// votes and signatures it waits for (peers' documents arrive over HTTP
// and do not wake it).
const earlyPoll = 5 * time.Millisecond

// earlyRound runs the early first round and returns its valid-after, or
// returns the zero time without one when the regular first round's vote
// time comes first or ctx ends.
func (a *Authority) earlyRound(ctx context.Context) time.Time {
	giveUp := a.sched.VoteTime(a.sched.NextRound(a.now()))
	for !a.earlyReady() {
		d := giveUp.Sub(a.now())
		if d <= 0 {
			return time.Time{}
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Time{}
		case <-a.reachedKick:
		case <-t.C:
		}
		t.Stop()
	}
	now := a.now()
	iv := a.sched.Interval.Nanoseconds()
	va := time.Unix(0, now.UnixNano()/iv*iv).UTC()
	a.log.Info("early first round", "valid_after", va, "relays_reached", a.cfg.EarlyRelays)

	voteBy := now.Add(a.sched.VoteDelay)
	a.voteStep(ctx, va, va, voteBy)
	// Sign only once every vote is in (or at voteBy): authorities that
	// compute from different sets of votes sign different documents.
	if !a.waitUntil(ctx, voteBy, func() bool { return len(a.core.MissingVotes(va)) == 0 }) {
		return time.Time{}
	}
	sigBy := a.now().Add(a.sched.SigDelay)
	a.sigStep(ctx, va, sigBy)
	if !a.waitUntil(ctx, sigBy, func() bool { return len(a.core.MissingSignatures(va)) == 0 }) {
		return time.Time{}
	}
	a.publishStep(ctx, va)
	return va
}

// earlyReady reports whether EarlyRelays relays passed their latest
// reachability test.
func (a *Authority) earlyReady() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.reached) >= a.cfg.EarlyRelays
}

// waitUntil polls done (called with a.mu held) until it holds or a.now()
// reaches deadline; it reports false if ctx ended.
func (a *Authority) waitUntil(ctx context.Context, deadline time.Time, done func() bool) bool {
	for {
		a.mu.Lock()
		ok := done()
		a.mu.Unlock()
		if ok || !a.now().Before(deadline) {
			return true
		}
		next := a.now().Add(earlyPoll)
		if next.After(deadline) {
			next = deadline
		}
		if !a.sleepUntil(ctx, next) {
			return false
		}
	}
}
