package directory

import (
	"bytes"
	"fmt"
	"sort"
	"time"
)

// ComputeConsensus applies the consensus rule (docs/spec/directory.md,
// "Consensus rule") to the votes of round va. The result depends only on
// net, the schedule, va and the set of votes (not their order), so
// authorities holding the same votes compute byte-identical bodies.
//
//   - Every vote must be for net, from an authority in net, for round va
//     with the schedule's fresh-until and valid-until; at most one per
//     authority. More than half of net's authorities must have voted.
//   - A relay is listed iff more than half of ALL authorities in net list
//     it with the Running and Valid flags in their votes.
//   - Its descriptor is the one listed by the most votes; ties go to the
//     newest published, then the lowest digest.
//   - Its bandwidth is the low median of the bandwidths of the descriptors
//     the votes list for it.
//   - Its flags are Running and Valid; Exit iff the chosen descriptor's
//     exit policy allows some port (IsExit); and each of Guard, Fast,
//     Stable, HSDir and BadExit iff more than half of the votes listing
//     the relay assign it.
//   - Family keeps only mutual declarations among listed relays.
//   - Params are those proposed by more than half of the votes (low
//     median value); Weights follow computeWeights.
func ComputeConsensus(net *Network, sched Schedule, va time.Time, votes []*Vote) (*Consensus, error) {
	if err := sched.Validate(); err != nil {
		return nil, err
	}
	if !sched.Aligned(va) {
		return nil, fmt.Errorf("%w: valid-after not aligned", ErrBadSchedule)
	}
	seen := make([]bool, len(net.Authorities))
	type candidate struct {
		entries []*VoteEntry
		running int
	}
	var params []Params
	byID := map[RelayID]*candidate{}
	for _, v := range votes {
		i := net.Index(v.Authority)
		switch {
		case v.Network != net.Name:
			return nil, ErrWrongNetwork
		case i < 0:
			return nil, ErrUnknownAuthority
		case seen[i]:
			return nil, fmt.Errorf("%w: two votes from one authority", ErrConflict)
		case !v.ValidAfter.Equal(va) || !v.FreshUntil.Equal(sched.FreshUntil(va)) || !v.ValidUntil.Equal(sched.ValidUntil(va)):
			return nil, ErrWrongRound
		}
		seen[i] = true
		params = append(params, v.Params)
		for j := range v.Entries {
			e := &v.Entries[j]
			id := e.Descriptor.ID()
			c := byID[id]
			if c == nil {
				c = &candidate{}
				byID[id] = c
			}
			c.entries = append(c.entries, e)
			if e.Flags.Has(FlagRunning | FlagValid) {
				c.running++
			}
		}
	}
	if len(votes) < net.Quorum() {
		return nil, ErrNotEnoughVotes
	}
	c := &Consensus{
		Network:    net.Name,
		ValidAfter: va.UTC(),
		FreshUntil: sched.FreshUntil(va).UTC(),
		ValidUntil: sched.ValidUntil(va).UTC(),
		Params:     majorityParams(params),
	}
	for _, cand := range byID {
		if cand.running < net.Quorum() {
			continue
		}
		c.Relays = append(c.Relays, routerStatus(cand.entries))
	}
	if len(c.Relays) > MaxRelays {
		return nil, ErrTooManyRelays
	}
	sort.Slice(c.Relays, func(i, j int) bool { return bytes.Compare(c.Relays[i].ID[:], c.Relays[j].ID[:]) < 0 })
	mutualFamilies(c)
	c.Weights = computeWeights(c)
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// routerStatus merges the votes' entries for one relay.
func routerStatus(entries []*VoteEntry) RouterStatus {
	counts := map[Digest]int{}
	for _, e := range entries {
		counts[e.Digest]++
	}
	best := entries[0]
	for _, e := range entries[1:] {
		cb, ce := counts[best.Digest], counts[e.Digest]
		switch {
		case ce > cb:
		case ce < cb:
			continue
		case e.Descriptor.Published.After(best.Descriptor.Published):
		case e.Descriptor.Published.Before(best.Descriptor.Published):
			continue
		case bytes.Compare(e.Digest[:], best.Digest[:]) < 0:
		default:
			continue
		}
		best = e
	}
	bws := make([]int64, len(entries))
	for i, e := range entries {
		bws[i] = e.Descriptor.Bandwidth
	}
	sort.Slice(bws, func(i, j int) bool { return bws[i] < bws[j] })
	d := best.Descriptor
	flags := FlagRunning | FlagValid
	if d.ExitPolicy.IsExit() {
		flags |= FlagExit
	}
	for _, f := range []Flags{FlagGuard, FlagFast, FlagStable, FlagHSDir, FlagBadExit} {
		n := 0
		for _, e := range entries {
			if e.Flags.Has(f) {
				n++
			}
		}
		if 2*n > len(entries) {
			flags |= f
		}
	}
	policy := d.ExitPolicy
	if policy == nil || len(policy.rules) == 0 {
		policy = RejectAllPolicy()
	}
	return RouterStatus{
		Nickname:   d.Nickname,
		ID:         d.ID(),
		LinkKey:    d.LinkKey,
		OnionKey:   d.OnionKey,
		OnionKeyPQ: d.OnionKeyPQ,
		Address:    d.Address,
		DirAddress: d.DirAddress,
		Family:     d.Family, // reduced to mutual declarations by mutualFamilies
		Bandwidth:  bws[(len(bws)-1)/2],
		Flags:      flags,
		ExitPolicy: policy,
		Published:  d.Published.UTC(),
		Digest:     best.Digest,
	}
}

// mutualFamilies keeps in each relay's Family only the listed relays that
// declare it back: a relay cannot put itself in another's family alone.
func mutualFamilies(c *Consensus) {
	for i := range c.Relays {
		r := &c.Relays[i]
		var fam []RelayID
		for _, id := range r.Family {
			if o := c.Relay(id); o != nil && declares(o.Family, r.ID) {
				fam = append(fam, id)
			}
		}
		r.Family = fam
	}
}

// declares reports whether the sorted list f contains id.
func declares(f []RelayID, id RelayID) bool {
	i := sort.Search(len(f), func(i int) bool { return bytes.Compare(f[i][:], id[:]) >= 0 })
	return i < len(f) && f[i] == id
}
