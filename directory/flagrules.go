package directory

import (
	"net/netip"
	"sort"
	"time"
)

// Flag thresholds (docs/spec/directory.md, "Flags"). Each percentile
// threshold is capped by a guarantee, so a relay good enough in absolute
// terms always qualifies however large the network.
const (
	// FastGuarantee: a Running relay advertising at least this many
	// bytes per second is Fast whatever the percentile.
	FastGuarantee = 100 << 10
	// StableGuarantee: a relay up at least this long is Stable.
	StableGuarantee = 7 * 24 * time.Hour
	// GuardGuarantee: a Fast, Stable relay with at least this bandwidth
	// is a Guard.
	GuardGuarantee = 2 << 20
)

// reachState is what an authority knows of one relay's reachability.
type reachState struct {
	tested   netip.AddrPort // address and link key last tested
	linkKey  [32]byte
	lastTest time.Time // zero: never tested
	lastOK   bool
	upSince  time.Time // start of the current run of successes; zero if down
}

// ReachabilityTarget is a relay an authority should test now: dial Address
// and complete a link handshake against LinkKey.
type ReachabilityTarget struct {
	ID      RelayID
	Address netip.AddrPort
	LinkKey [32]byte
}

// testPeriod is how often each relay is re-tested: twice per interval,
// so a vote always follows a test of less than one interval.
func (a *Authority) testPeriod() time.Duration { return a.sched.Interval / 2 }

// ReachabilityTargets returns the relays to test at now, sorted by ID:
// those never tested, whose address or link key changed since the last
// test, or whose last test is at least half an interval old. The driver
// tests them and reports each result with RecordReachability.
func (a *Authority) ReachabilityTargets(now time.Time) []ReachabilityTarget {
	var out []ReachabilityTarget
	for id, h := range a.descs {
		st := a.reach[id]
		if st != nil && st.tested == h.d.Address && st.linkKey == h.d.LinkKey && now.Sub(st.lastTest) < a.testPeriod() {
			continue
		}
		out = append(out, ReachabilityTarget{ID: id, Address: h.d.Address, LinkKey: h.d.LinkKey})
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].ID[:]) < string(out[j].ID[:]) })
	return out
}

// RecordReachability records the result of testing t at now. Results for
// relays whose descriptor is no longer held, or whose address or link key
// changed since t was issued, are ignored.
func (a *Authority) RecordReachability(t ReachabilityTarget, ok bool, now time.Time) {
	h, held := a.descs[t.ID]
	if !held || h.d.Address != t.Address || h.d.LinkKey != t.LinkKey {
		return
	}
	st := a.reach[t.ID]
	if st == nil || st.tested != t.Address || st.linkKey != t.LinkKey {
		st = &reachState{tested: t.Address, linkKey: t.LinkKey}
		a.reach[t.ID] = st
	}
	if now.Before(st.lastTest) {
		return // an older test finishing late
	}
	st.lastTest, st.lastOK = now, ok
	switch {
	case !ok:
		st.upSince = time.Time{}
	case st.upSince.IsZero():
		st.upSince = now
	}
}

// running reports whether the relay counts as Running at now: its most
// recent test succeeded and is at most two intervals old.
func (st *reachState) running(now time.Time, interval time.Duration) bool {
	return st != nil && st.lastOK && now.Sub(st.lastTest) <= 2*interval
}

// assignFlags returns this authority's flags for each held descriptor at
// now (docs/spec/directory.md, "Flags"):
//
//	Valid    every descriptor held (it verified and is within its lifetime)
//	Running  the relay's most recent reachability test (a completed link
//	         handshake against its link key) succeeded, at most two
//	         intervals ago
//	Exit     its exit policy allows some port
//	BadExit  the operator listed it (Config.BadExits)
//	Fast     Running, and bandwidth >= min(FastGuarantee, the bandwidth
//	         at the 1/8 quantile of Running relays)
//	Stable   Running, and up (uninterrupted successful tests) for at
//	         least min(StableGuarantee, the median uptime of Running relays)
//	Guard    Fast, Stable, and bandwidth >= min(GuardGuarantee, the
//	         median bandwidth of Running relays)
//	HSDir    Fast and Stable
func (a *Authority) assignFlags(now time.Time) map[RelayID]Flags {
	out := make(map[RelayID]Flags, len(a.descs))
	var bws []int64
	var ups []time.Duration
	for id, h := range a.descs {
		st := a.reach[id]
		if st.running(now, a.sched.Interval) && st.tested == h.d.Address && st.linkKey == h.d.LinkKey {
			bws = append(bws, h.d.Bandwidth)
			ups = append(ups, now.Sub(st.upSince))
		}
	}
	sort.Slice(bws, func(i, j int) bool { return bws[i] < bws[j] })
	sort.Slice(ups, func(i, j int) bool { return ups[i] < ups[j] })
	var fastMin, guardMin int64
	var stableMin time.Duration
	if len(bws) > 0 {
		fastMin = min(FastGuarantee, bws[len(bws)/8])
		guardMin = min(GuardGuarantee, bws[(len(bws)-1)/2])
		stableMin = min(StableGuarantee, ups[(len(ups)-1)/2])
	}
	for id, h := range a.descs {
		f := FlagValid
		if h.d.ExitPolicy.IsExit() {
			f |= FlagExit
		}
		if a.badExits[id] {
			f |= FlagBadExit
		}
		st := a.reach[id]
		if st.running(now, a.sched.Interval) && st.tested == h.d.Address && st.linkKey == h.d.LinkKey {
			f |= FlagRunning
			fast := h.d.Bandwidth >= fastMin || a.testing
			stable := now.Sub(st.upSince) >= stableMin || a.testing
			if fast {
				f |= FlagFast
			}
			if stable {
				f |= FlagStable
			}
			if fast && stable {
				f |= FlagHSDir
				if h.d.Bandwidth >= guardMin || a.testing {
					f |= FlagGuard
				}
			}
		}
		out[id] = f
	}
	return out
}
