package client

import (
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/directory"
)

// Path selection (docs/client.md, "Paths"). A path is guard, middles, exit:
//
//   - the guard comes from the guard sample (guards.go);
//   - the exit has Running, Valid and Exit, not BadExit, and a policy that
//     may accept the port; the middles have Running and Valid;
//   - no relay twice, and no two relays in one family or one IPv4 /16
//     (IPv6 /32);
//   - every hop is preferably Fast, and Stable too when the stream is
//     long-lived (NeedsStable); if no relay meets the preference, it is
//     dropped for that hop rather than failing;
//   - relays that recently failed to extend are avoided while others fit;
//   - every choice is weighted by bandwidth (relayWeight).

// role is the position a relay is weighted for.
type role int

const (
	roleGuard role = iota
	roleMiddle
	roleExit
)

// relayWeight is r's selection weight for a role: its consensus bandwidth
// (at least 1). Exit-flagged relays are weighted down to a third outside
// the exit position, so that the scarce exit capacity is kept for exits
// (what Tor's Wgd/Wmd consensus weights do); when the consensus gains
// bandwidth weights they replace this rule.
func relayWeight(r *directory.RouterStatus, ro role) int64 {
	w := max(r.Bandwidth, 1)
	if ro != roleExit && r.Flags.Has(directory.FlagExit) {
		w = max(w/3, 1)
	}
	return w
}

// longLivedPorts are ports whose streams last long (Tor's LongLivedPorts):
// their circuits prefer Stable relays.
var longLivedPorts = []uint16{21, 22, 706, 1863, 5050, 5190, 5222, 5223, 6523, 6667, 6697, 8300}

// NeedsStable reports whether streams to port prefer Stable relays.
func NeedsStable(port uint16) bool { return slices.Contains(longLivedPorts, port) }

// PathRequest is what a path must satisfy.
type PathRequest struct {
	Port   uint16
	Stable bool                               // prefer Stable relays (long-lived streams)
	Length int                                // hops, guard and exit included
	Avoid  func(*directory.RouterStatus) bool // e.g. recently failed relays; may be nil
}

// ChoosePath picks a path (guard first, exit last) for req from the guard
// sample and the consensus. It is a pure function of its arguments (rnd
// supplies the randomness), so the daemon and the simulator choose paths
// with the same code. It tries each guard in preference order until one
// admits an exit and middles; it returns ErrNoGuard or ErrNoPath.
func ChoosePath(gs *GuardSet, cons *directory.Consensus, now time.Time, rnd io.Reader, req PathRequest) ([]*directory.RouterStatus, error) {
	tried := map[directory.RelayID]bool{}
	for range MaxSampledGuards {
		guard := PickGuard(gs, cons, now, func(r *directory.RouterStatus) bool { return tried[r.ID] })
		if guard == nil {
			if len(tried) == 0 {
				return nil, ErrNoGuard
			}
			return nil, ErrNoPath
		}
		tried[guard.ID] = true
		if p := pathFrom(guard, cons, rnd, req); p != nil {
			return p, nil
		}
	}
	return nil, ErrNoPath
}

// pathFrom completes a path starting at guard, or returns nil.
func pathFrom(guard *directory.RouterStatus, cons *directory.Consensus, rnd io.Reader, req PathRequest) []*directory.RouterStatus {
	path := []*directory.RouterStatus{guard}
	fits := func(r *directory.RouterStatus) bool {
		return r.Flags.Has(directory.FlagRunning|directory.FlagValid) && !conflictsWithAny(r, path)
	}
	exit := pickPreferred(cons, rnd, roleExit, req, func(r *directory.RouterStatus) bool {
		return fits(r) && r.Flags.Has(directory.FlagExit) && !r.Flags.Has(directory.FlagBadExit) &&
			r.ExitPolicy != nil && r.ExitPolicy.AllowsPort(req.Port)
	})
	if exit == nil {
		return nil
	}
	path = append(path, exit)
	for len(path) < req.Length {
		m := pickPreferred(cons, rnd, roleMiddle, req, fits)
		if m == nil {
			return nil
		}
		path = append(path, m)
	}
	// guard, exit, middles... → guard, middles..., exit
	out := make([]*directory.RouterStatus, 0, len(path))
	out = append(out, guard)
	out = append(out, path[2:]...)
	return append(out, exit)
}

// pickPreferred picks among relays satisfying ok, preferring in turn:
// Fast (+Stable if req.stable) and not avoided; not avoided; anything.
func pickPreferred(cons *directory.Consensus, rnd io.Reader, ro role, req PathRequest, ok func(*directory.RouterStatus) bool) *directory.RouterStatus {
	want := directory.FlagFast
	if req.Stable {
		want |= directory.FlagStable
	}
	avoided := func(r *directory.RouterStatus) bool { return req.Avoid != nil && req.Avoid(r) }
	if r := weightedPick(cons, rnd, ro, func(r *directory.RouterStatus) bool {
		return ok(r) && r.Flags.Has(want) && !avoided(r)
	}); r != nil {
		return r
	}
	if r := weightedPick(cons, rnd, ro, func(r *directory.RouterStatus) bool { return ok(r) && !avoided(r) }); r != nil {
		return r
	}
	return weightedPick(cons, rnd, ro, ok)
}

// conflictsWithAny reports whether r may not share a circuit with any of
// path: the same relay, a family member (either side's declaration), or the
// same IPv4 /16 or IPv6 /32.
func conflictsWithAny(r *directory.RouterStatus, path []*directory.RouterStatus) bool {
	for _, p := range path {
		if p.ID == r.ID || p.InFamily(r.ID) || r.InFamily(p.ID) || sameSubnet(p.Address.Addr(), r.Address.Addr()) {
			return true
		}
	}
	return false
}

// weightedPick chooses among relays satisfying ok, with probability
// proportional to relayWeight for the role; nil if none does.
func weightedPick(cons *directory.Consensus, rnd io.Reader, ro role, ok func(*directory.RouterStatus) bool) *directory.RouterStatus {
	var total int64
	for i := range cons.Relays {
		if ok(&cons.Relays[i]) {
			total += relayWeight(&cons.Relays[i], ro)
		}
	}
	if total == 0 {
		return nil
	}
	x := randIntn64(rnd, total)
	for i := range cons.Relays {
		r := &cons.Relays[i]
		if !ok(r) {
			continue
		}
		x -= relayWeight(r, ro)
		if x < 0 {
			return r
		}
	}
	return nil
}

// randIntn64 returns a uniform value in [0, n) read from rnd (0 if n <= 1
// or rnd fails).
func randIntn64(rnd io.Reader, n int64) int64 {
	if n <= 1 {
		return 0
	}
	var b [8]byte
	// Rejection sampling for an unbiased draw.
	limit := ^uint64(0) - (^uint64(0) % uint64(n))
	for {
		if _, err := io.ReadFull(rnd, b[:]); err != nil {
			return 0
		}
		v := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
		if v < limit {
			return int64(v % uint64(n))
		}
	}
}

// sameSubnet reports whether two relay addresses share an IPv4 /16 or an
// IPv6 /32: such relays may be run by one operator.
func sameSubnet(a, b netip.Addr) bool {
	a, b = a.Unmap(), b.Unmap()
	if a.Is4() != b.Is4() {
		return false
	}
	bits := 16
	if !a.Is4() {
		bits = 32
	}
	pa, _ := a.Prefix(bits)
	pb, _ := b.Prefix(bits)
	return pa == pb
}

// HopSpec is what a circuit handshake needs of relay r.
func HopSpec(r *directory.RouterStatus) circuit.HopSpec {
	return circuit.HopSpec{Identity: r.ID, LinkKey: r.LinkKey, OnionKey: r.OnionKey, OnionKeyPQ: r.OnionKeyPQ, Addr: r.Address}
}
