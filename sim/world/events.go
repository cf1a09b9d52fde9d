package world

import (
	"github.com/veilnet/veil/sim/scenario"
	"github.com/veilnet/veil/sim/simnet"
)

// Scenario events. Which relays crash is drawn from the world's stream
// when the event fires. A partition cuts the links between one region and
// the others (authorities are not network nodes yet, so it does not touch
// the directory). A create-flood is set up in flood.go.

func (w *World) scheduleEvents() {
	for i := range w.sc.Events {
		ev := w.sc.Events[i]
		if ev.Action == "create-flood" {
			// Attacking nodes exist from the start (idle until the
			// flood) so that floods are set up before the clock runs.
			f := w.addFlood(ev)
			w.sim.After(ev.At.Duration, f.begin)
			continue
		}
		w.sim.After(ev.At.Duration, func() { w.fire(ev) })
	}
}

func (w *World) fire(ev scenario.Event) {
	switch ev.Action {
	case "crash":
		var honest []*Relay
		for _, r := range w.relays {
			if r.behaviour == "" && r.node.Up() {
				honest = append(honest, r)
			}
		}
		n := ev.Count
		if ev.Fraction > 0 {
			n = int(ev.Fraction*float64(len(honest)) + 0.5)
		}
		n = min(n, len(honest))
		w.rng.Shuffle(len(honest), func(i, j int) { honest[i], honest[j] = honest[j], honest[i] })
		victims := honest[:n]
		for _, r := range victims {
			r.crash()
		}
		w.event("%d relays crash", n)
		if ev.For.Duration > 0 {
			w.sim.After(ev.For.Duration, func() {
				for _, r := range victims {
					r.restart()
				}
				w.event("%d relays restart", n)
			})
		}
	case "authority-offline":
		w.dir.n.Online[ev.Authority] = false
		w.event("authority %d offline", ev.Authority)
		if ev.For.Duration > 0 {
			w.sim.After(ev.For.Duration, func() {
				w.dir.n.Online[ev.Authority] = true
				w.event("authority %d online", ev.Authority)
			})
		}
	case "partition":
		region := w.sc.RegionIndex(ev.Region)
		w.net.SetCut(func(a, b *simnet.Node) bool { return (a.Region == region) != (b.Region == region) })
		w.event("region %s partitioned", ev.Region)
		if ev.For.Duration > 0 {
			w.sim.After(ev.For.Duration, func() {
				w.net.SetCut(nil)
				w.event("partition of %s healed", ev.Region)
			})
		}
	}
}
