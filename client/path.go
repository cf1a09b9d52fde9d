package client

import (
	"net/netip"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/directory"
)

// Path selection: bandwidth-weighted among Running and Valid relays; the
// exit needs the Exit flag and a policy that may accept the port; no relay
// twice and no two relays in the same IPv4 /16 or IPv6 /32. The guard is
// kept for the client's lifetime (persistent guards arrive with the
// client issue) and replaced when it leaves the consensus.

// pickPath returns hops guard-first, exit last.
func (c *Client) pickPath(port uint16) ([]*directory.RouterStatus, error) {
	c.mu.Lock()
	cons := c.consensus
	guardID := c.guard
	c.mu.Unlock()
	if cons == nil {
		return nil, ErrNoConsensus
	}
	n := c.cfg.PathLength
	usable := func(r *directory.RouterStatus) bool {
		return r.Flags.Has(directory.FlagRunning | directory.FlagValid)
	}
	exit := c.weightedPick(cons, func(r *directory.RouterStatus) bool {
		return usable(r) && r.Flags.Has(directory.FlagExit) && r.ExitPolicy != nil && r.ExitPolicy.AllowsPort(port)
	})
	if exit == nil {
		return nil, ErrNoPath
	}
	path := []*directory.RouterStatus{exit}
	fits := func(r *directory.RouterStatus) bool {
		for _, p := range path {
			if p.ID == r.ID || sameSubnet(p.Address.Addr(), r.Address.Addr()) {
				return false
			}
		}
		return true
	}
	var guard *directory.RouterStatus
	if guardID != nil {
		if g := cons.Relay(*guardID); g != nil && usable(g) && fits(g) {
			guard = g
		}
	}
	if guard == nil {
		guard = c.weightedPick(cons, func(r *directory.RouterStatus) bool {
			return usable(r) && r.Flags.Has(directory.FlagGuard) && fits(r)
		})
		if guard == nil {
			return nil, ErrNoPath
		}
		if guardID == nil {
			id := guard.ID
			c.mu.Lock()
			c.guard = &id
			c.mu.Unlock()
		}
	}
	path = append(path, guard)
	for len(path) < n {
		m := c.weightedPick(cons, func(r *directory.RouterStatus) bool { return usable(r) && fits(r) })
		if m == nil {
			return nil, ErrNoPath
		}
		path = append(path, m)
	}
	// Reorder to guard, middles, exit.
	out := make([]*directory.RouterStatus, 0, n)
	out = append(out, guard)
	out = append(out, path[2:]...)
	return append(out, exit), nil
}

// weightedPick chooses among relays satisfying ok, with probability
// proportional to bandwidth (each counted as at least 1).
func (c *Client) weightedPick(cons *directory.Consensus, ok func(*directory.RouterStatus) bool) *directory.RouterStatus {
	var total int64
	for i := range cons.Relays {
		if ok(&cons.Relays[i]) {
			total += max(cons.Relays[i].Bandwidth, 1)
		}
	}
	if total == 0 {
		return nil
	}
	x := c.randIntn64(total)
	for i := range cons.Relays {
		r := &cons.Relays[i]
		if !ok(r) {
			continue
		}
		x -= max(r.Bandwidth, 1)
		if x < 0 {
			return r
		}
	}
	return nil
}

func (c *Client) randIntn64(n int64) int64 {
	if n <= 1 {
		return 0
	}
	var b [8]byte
	// Rejection sampling for an unbiased draw.
	limit := ^uint64(0) - (^uint64(0) % uint64(n))
	for {
		if _, err := c.cfg.Rand.Read(b[:]); err != nil {
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

func hopSpec(r *directory.RouterStatus) circuit.HopSpec {
	return circuit.HopSpec{Identity: r.ID, LinkKey: r.LinkKey, OnionKey: r.OnionKey, OnionKeyPQ: r.OnionKeyPQ, Addr: r.Address}
}
