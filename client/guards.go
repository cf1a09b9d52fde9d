package client

import (
	"io"
	"slices"
	"time"

	"github.com/veilnet/veil/directory"
)

// Guards: a small, persistent set of entry relays, in the spirit of Tor's
// guard-spec (docs/client.md, "Guards"), simpler where equally safe.
//
// The client keeps a *sample*: an ordered list of at most MaxSampledGuards
// relays, kept in the state directory. The order is the preference order;
// the first NumPrimaryGuards listed entries are the *primary* guards. Every
// circuit's first hop is the first entry that is usable now:
//
//   - listed in the consensus with Running, Valid and Guard, and
//   - not waiting out a retry delay after it failed (see retryDelay).
//
// If every listed entry is waiting, the one whose retry comes first is used
// anyway (the client never stalls on its own bookkeeping).
//
// The sample changes only by these rules, applied by UpdateGuards:
//
//  1. Added: while fewer than NumSampledGuards entries are listed, or while
//     every listed entry is failing, one relay is sampled, bandwidth
//     weighted, from the Guard-flagged relays not in the sample and not in
//     the family or IPv4 /16 (IPv6 /32) of a listed entry; never beyond
//     MaxSampledGuards entries. An attacker who takes guards offline can
//     therefore push a client through at most MaxSampledGuards guards.
//  2. Removed: when its lifetime (GuardLifetime plus a random extra of up
//     to GuardLifetimeJitter, fixed when sampled) is over; when it has been
//     unlisted or without the Guard flag for RemoveUnlistedAfter; or when
//     it has failed continuously for RemoveUnreachableAfter while another
//     guard was reachable (so a client that was offline keeps its guards).
//
// All of this is pure: functions of (sample, consensus, now, randomness),
// so the simulator can drive it.

// Guard parameters.
const (
	NumSampledGuards       = 3
	NumPrimaryGuards       = 2
	MaxSampledGuards       = 8
	GuardLifetime          = 60 * 24 * time.Hour
	GuardLifetimeJitter    = 30 * 24 * time.Hour
	RemoveUnlistedAfter    = 20 * 24 * time.Hour
	RemoveUnreachableAfter = 7 * 24 * time.Hour
)

// Path bias, in the spirit of Tor's proposal 209. Every circuit whose
// first hop (the guard) answered counts once against its guard: it
// *succeeds* if it was fully built and, if a stream request was sent on
// it, a cell from its far end was accepted afterwards (CONNECTED, END,
// RESOLVED, data or a SENDME all count: each proves the path carried the
// request and an answer); it *fails* if it died while being extended, or
// died used and unanswered.
//
// veil's relays detect a modified, dropped or replayed cell at the next
// hop and destroy the circuit, so a guard that tags or drops cells turns
// every circuit through it into such a failure (at the EXTEND it passes
// on, or at the first stream request); without this rule the client
// would keep the guard and never get a working circuit. Failures caused
// by relays later in the path are spread over many randomly chosen
// middles and exits, so they cannot push an honest guard's success rate
// down to PathBiasDisableRate unless the adversary holds most of the
// network; and a client disables at most MaxSampledGuards guards in a
// guard lifetime, because a disabled guard stays in the sample (it is not
// sampled again) until it expires.
const (
	// PathBiasMinCircuits is how many circuits a guard is judged on.
	PathBiasMinCircuits = 20
	// PathBiasDisableRate: a guard whose circuits succeed less often than
	// this is disabled.
	PathBiasDisableRate = 0.3
	// PathBiasScaleAt: when a guard's use count reaches this, both counts
	// are halved, so that old history fades (Tor's pb_scalecircsatattempts).
	PathBiasScaleAt = 200
)

// GuardEntry is one sampled guard, as kept in the state file.
type GuardEntry struct {
	ID       directory.RelayID `json:"-"`                  // hex "id" on disk (state.go)
	Nickname string            `json:"nickname,omitempty"` // from the last consensus that listed it
	Added    time.Time         `json:"added"`
	Expires  time.Time         `json:"expires"`
	// UnlistedSince is when it was first seen missing (or without Guard);
	// zero while listed.
	UnlistedSince time.Time `json:"unlisted_since,omitzero"`
	// FailedSince is when connecting to it started failing; zero while it
	// is reachable (or was never tried).
	FailedSince time.Time `json:"failed_since,omitzero"`
	// NextRetry is when a failing guard may be tried again.
	NextRetry     time.Time `json:"next_retry,omitzero"`
	LastConnected time.Time `json:"last_connected,omitzero"`
	// Path bias: circuits through this guard, how many of them succeeded,
	// and when the guard was disabled for too few (zero while enabled).
	// See PathBiasMinCircuits.
	PathAttempts  int       `json:"path_attempts,omitempty"`
	PathSuccesses int       `json:"path_successes,omitempty"`
	PathBiasSince time.Time `json:"path_bias_since,omitzero"`
}

// Disabled reports whether the guard was disabled by the path-bias rule.
func (e *GuardEntry) Disabled() bool { return !e.PathBiasSince.IsZero() }

// Failing reports whether the guard is waiting out a retry delay at now.
func (e *GuardEntry) Failing(now time.Time) bool {
	return !e.FailedSince.IsZero() && now.Before(e.NextRetry)
}

// GuardSet is the sample, in preference order.
type GuardSet struct {
	Entries []GuardEntry `json:"guards"`
}

// Clone returns a deep copy.
func (gs GuardSet) Clone() GuardSet {
	return GuardSet{Entries: slices.Clone(gs.Entries)}
}

// guardUsable reports whether r may be a guard in this consensus.
func guardUsable(r *directory.RouterStatus) bool {
	return r != nil && r.Flags.Has(directory.FlagRunning|directory.FlagValid|directory.FlagGuard)
}

// retryDelay is how long a guard that has been failing for d waits before
// it is tried again (Tor's schedule for primary guards).
func retryDelay(d time.Duration) time.Duration {
	switch {
	case d < 6*time.Hour:
		return 10 * time.Minute
	case d < 4*24*time.Hour:
		return 90 * time.Minute
	case d < 7*24*time.Hour:
		return 4 * time.Hour
	}
	return 9 * time.Hour
}

// UpdateGuards returns the sample after applying the consensus at now: it
// refreshes listing state and nicknames, removes entries by rule 2 and adds
// entries by rule 1 (drawing randomness from rnd). gs is not modified.
// cons may be nil (then only expiry applies).
func UpdateGuards(gs GuardSet, cons *directory.Consensus, now time.Time, rnd io.Reader) GuardSet {
	out := GuardSet{Entries: make([]GuardEntry, 0, len(gs.Entries)+1)}
	var lastOK time.Time // the latest successful connection to any guard
	for _, e := range gs.Entries {
		lastOK = maxTime(lastOK, e.LastConnected)
	}
	for _, e := range gs.Entries {
		if cons != nil {
			r := cons.Relay(e.ID)
			if guardUsable(r) {
				e.UnlistedSince = time.Time{}
				e.Nickname = r.Nickname
			} else if e.UnlistedSince.IsZero() {
				e.UnlistedSince = now
			}
		}
		switch {
		case !now.Before(e.Expires):
			continue
		case !e.UnlistedSince.IsZero() && now.Sub(e.UnlistedSince) >= RemoveUnlistedAfter:
			continue
		case !e.FailedSince.IsZero() && lastOK.Sub(e.FailedSince) >= RemoveUnreachableAfter:
			continue
		}
		out.Entries = append(out.Entries, e)
	}
	if cons == nil {
		return out
	}
	for len(out.Entries) < MaxSampledGuards {
		listed, working := 0, 0
		for i := range out.Entries {
			if out.Entries[i].UnlistedSince.IsZero() {
				listed++
				if !out.Entries[i].Failing(now) && !out.Entries[i].Disabled() {
					working++
				}
			}
		}
		if listed >= NumSampledGuards && working > 0 {
			break
		}
		r := sampleGuard(out, cons, rnd)
		if r == nil {
			break
		}
		extra := time.Duration(randIntn64(rnd, int64(GuardLifetimeJitter/time.Second))) * time.Second
		out.Entries = append(out.Entries, GuardEntry{ID: r.ID, Nickname: r.Nickname, Added: now,
			Expires: now.Add(GuardLifetime + extra)})
	}
	return out
}

// sampleGuard draws a new guard for gs, or nil if none is eligible.
func sampleGuard(gs GuardSet, cons *directory.Consensus, rnd io.Reader) *directory.RouterStatus {
	var listed []*directory.RouterStatus
	for i := range gs.Entries {
		if r := cons.Relay(gs.Entries[i].ID); r != nil && gs.Entries[i].UnlistedSince.IsZero() {
			listed = append(listed, r)
		}
	}
	eligible := func(r *directory.RouterStatus) bool {
		if !guardUsable(r) {
			return false
		}
		for i := range gs.Entries {
			if gs.Entries[i].ID == r.ID {
				return false
			}
		}
		return !conflictsWithAny(r, listed)
	}
	// Prefer Fast and Stable guards; fall back to any Guard-flagged relay.
	if r := weightedPick(cons, rnd, roleGuard, func(r *directory.RouterStatus) bool {
		return eligible(r) && r.Flags.Has(directory.FlagFast|directory.FlagStable)
	}); r != nil {
		return r
	}
	return weightedPick(cons, rnd, roleGuard, eligible)
}

// PickGuard returns the guard for a new circuit: the first entry, in
// order, that is listed and not failing at now and for which skip returns
// false (skip may be nil); if all such entries are failing, the one whose
// retry comes first. It returns nil if no entry is listed and not skipped.
func PickGuard(gs *GuardSet, cons *directory.Consensus, now time.Time, skip func(*directory.RouterStatus) bool) *directory.RouterStatus {
	var soonest *directory.RouterStatus
	var soonestAt time.Time
	for i := range gs.Entries {
		e := &gs.Entries[i]
		r := cons.Relay(e.ID)
		if !e.UnlistedSince.IsZero() || e.Disabled() || !guardUsable(r) || (skip != nil && skip(r)) {
			continue
		}
		if !e.Failing(now) {
			return r
		}
		if soonest == nil || e.NextRetry.Before(soonestAt) {
			soonest, soonestAt = r, e.NextRetry
		}
	}
	return soonest
}

// PrimaryGuards returns the IDs of the first NumPrimaryGuards listed
// entries.
func (gs *GuardSet) PrimaryGuards() []directory.RelayID {
	var out []directory.RelayID
	for i := range gs.Entries {
		if len(out) == NumPrimaryGuards {
			break
		}
		if gs.Entries[i].UnlistedSince.IsZero() && !gs.Entries[i].Disabled() {
			out = append(out, gs.Entries[i].ID)
		}
	}
	return out
}

// MarkFailed records a failed connection to guard id at now and reports
// whether the entry's state changed.
func (gs *GuardSet) MarkFailed(id directory.RelayID, now time.Time) bool {
	for i := range gs.Entries {
		e := &gs.Entries[i]
		if e.ID != id {
			continue
		}
		if e.FailedSince.IsZero() {
			e.FailedSince = now
		}
		e.NextRetry = now.Add(retryDelay(now.Sub(e.FailedSince)))
		return true
	}
	return false
}

// MarkConnected records a successful connection (a link handshake) to
// guard id at now and reports whether the entry's state changed.
func (gs *GuardSet) MarkConnected(id directory.RelayID, now time.Time) bool {
	for i := range gs.Entries {
		e := &gs.Entries[i]
		if e.ID != id {
			continue
		}
		changed := !e.FailedSince.IsZero() || now.Sub(e.LastConnected) > time.Hour
		e.FailedSince, e.NextRetry = time.Time{}, time.Time{}
		e.LastConnected = now
		return changed
	}
	return false
}

// NoteCircuit records the outcome of one circuit through guard id (see
// PathBiasMinCircuits) and reports whether this disabled the guard.
func (gs *GuardSet) NoteCircuit(id directory.RelayID, answered bool, now time.Time) (disabled bool) {
	for i := range gs.Entries {
		e := &gs.Entries[i]
		if e.ID != id {
			continue
		}
		e.PathAttempts++
		if answered {
			e.PathSuccesses++
		}
		if e.PathAttempts >= PathBiasScaleAt {
			e.PathAttempts /= 2
			e.PathSuccesses /= 2
		}
		if !e.Disabled() && e.PathAttempts >= PathBiasMinCircuits &&
			float64(e.PathSuccesses) < PathBiasDisableRate*float64(e.PathAttempts) {
			e.PathBiasSince = now
			return true
		}
		return false
	}
	return false
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
