package world

import (
	"net/netip"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/directory"
)

// Path selection. The guard comes from package client's own guard code
// (client.UpdateGuards, client.PickGuard, MarkFailed, MarkConnected); the
// exit and middle follow client/path.go's rules, restated here because
// client.choosePath is not exported: an exit with Running, Valid, Exit and
// a policy that may accept the port, middles with Running and Valid; no
// relay twice, no two relays in one family or IPv4 /16; Fast preferred;
// each choice weighted by consensus bandwidth, exits counted at a third
// outside the exit position (client.relayWeight).

// pathLength is the number of hops of every circuit.
const pathLength = 3

type role int

const (
	roleMiddle role = iota
	roleExit
)

func relayWeight(r *directory.RouterStatus, ro role) int64 {
	w := max(r.Bandwidth, 1)
	if ro != roleExit && r.Flags.Has(directory.FlagExit) {
		w = max(w/3, 1)
	}
	return w
}

// choosePath returns guard, middle, exit for port, or nil.
func (c *Client) choosePath(port uint16) []*directory.RouterStatus {
	cons := c.w.cons
	now := c.w.sim.Now()
	tried := map[directory.RelayID]bool{}
	for range client.MaxSampledGuards {
		g := client.PickGuard(&c.guards, cons, now, func(r *directory.RouterStatus) bool { return tried[r.ID] })
		if g == nil {
			return nil
		}
		tried[g.ID] = true
		if p := c.pathFrom(g, port); p != nil {
			return p
		}
	}
	return nil
}

func (c *Client) pathFrom(guard *directory.RouterStatus, port uint16) []*directory.RouterStatus {
	path := []*directory.RouterStatus{guard}
	fits := func(r *directory.RouterStatus) bool {
		return r.Flags.Has(directory.FlagRunning|directory.FlagValid) && !conflicts(r, path)
	}
	exit := c.pickPreferred(roleExit, func(r *directory.RouterStatus) bool {
		return fits(r) && r.Flags.Has(directory.FlagExit) && r.ExitPolicy != nil && r.ExitPolicy.AllowsPort(port)
	})
	if exit == nil {
		return nil
	}
	path = append(path, exit)
	for len(path) < pathLength {
		m := c.pickPreferred(roleMiddle, fits)
		if m == nil {
			return nil
		}
		path = append(path, m)
	}
	return []*directory.RouterStatus{guard, path[2], exit}
}

func (c *Client) pickPreferred(ro role, ok func(*directory.RouterStatus) bool) *directory.RouterStatus {
	if r := c.weightedPick(ro, func(r *directory.RouterStatus) bool { return ok(r) && r.Flags.Has(directory.FlagFast) }); r != nil {
		return r
	}
	return c.weightedPick(ro, ok)
}

func (c *Client) weightedPick(ro role, ok func(*directory.RouterStatus) bool) *directory.RouterStatus {
	cons := c.w.cons
	var total int64
	for i := range cons.Relays {
		if ok(&cons.Relays[i]) {
			total += relayWeight(&cons.Relays[i], ro)
		}
	}
	if total == 0 {
		return nil
	}
	x := int64(c.rand.Uint64() % uint64(total))
	for i := range cons.Relays {
		r := &cons.Relays[i]
		if !ok(r) {
			continue
		}
		if x -= relayWeight(r, ro); x < 0 {
			return r
		}
	}
	return nil
}

func conflicts(r *directory.RouterStatus, path []*directory.RouterStatus) bool {
	for _, p := range path {
		if p.ID == r.ID || p.InFamily(r.ID) || r.InFamily(p.ID) || sameSubnet(p.Address.Addr(), r.Address.Addr()) {
			return true
		}
	}
	return false
}

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
