package world

import (
	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/sim/scenario"
	"github.com/veilnet/veil/sim/simnet"
)

// Malicious relays. All of them belong to one adversary. Each applies its
// group's behaviour to the forward RELAY cells it passes on (after Skip
// untouched cells, to Cells cells, each with chance Fraction):
//
//   - "tag" flips one bit (the classic tagging attack on Tor's old relay
//     crypto, where a colluding exit recognises the damage);
//   - "drop" drops the cell;
//   - "delay" holds it for Delay (cells all held alike keep their order;
//     a cell that is not held overtakes the held ones);
//   - "passive" relays honestly and only watches.
//
// DESIGN.md property 2 says the next honest hop detects a modified,
// dropped or reordered cell and destroys the circuit, so no later hop, and
// in particular no colluding relay further on, ever accepts a cell of the
// circuit sent after the tampering.
//
// To check it the world watches every circuit downstream of a malicious
// relay: each watched hop counts the forward RELAY cells that reach it
// (cells travel in order, so a count says which cell is which) and what
// its layer check said (noteForward). When a malicious relay tampers with
// its k-th forwarded cell, the next hop's cells from the k-th on are
// "after the tampering"; a hop that accepts one of those (it never should)
// passes the mark on to the hop after it, so acceptance anywhere down the
// circuit is counted.

// advRelay is a malicious relay's settings.
type advRelay struct {
	cfg   *scenario.Adversary
	cells int // AffectedCells
}

// advCirc is the adversary's view of one circuit at one relay: at a
// malicious relay, what it did to the circuit (seen, affected); at a
// watched hop, what reached it (arrived, post).
type advCirc struct {
	seen     int // forward RELAY cells this malicious relay passed on
	affected int
	sent     int // of them, sent on at once (not dropped or held)
	tampered bool
	delayed  bool

	hop      int // 1: the next hop after a malicious relay
	arrived  int // forward RELAY cells that reached this hop
	sentDown int // forward cells this hop passed on
	// tamperAt is the arrival count from which cells come from after the
	// tampering (0: none yet); rec is the tampered circuit's record.
	tamperAt int
	rec      *tamperRecord
	delayRec *tamperRecord
	down     *advCirc // the watch on the next hop
}

// tamperRecord is one tampered (or delayed) circuit.
type tamperRecord struct {
	detected bool
	// down is the next hop's view of the circuit when the tampered cell
	// left (nil if it had none yet) and at its arrival count there.
	down *advCirc
	at   int
}

// advConfig returns r's settings (nil for an honest relay). Malicious
// relays follow the honest ones in w.relays, group by group.
func (w *World) advConfig(r *Relay) *advRelay {
	st := w.attacks()
	if a, ok := st.relays[r]; ok {
		return a
	}
	k := 0
	for _, x := range w.relays {
		if x.behaviour == "" {
			continue
		}
		g := 0
		for n := k; n >= w.sc.Adversary[g].Count; g++ {
			n -= w.sc.Adversary[g].Count
		}
		cfg := &w.sc.Adversary[g]
		st.relays[x] = &advRelay{cfg: cfg, cells: cfg.AffectedCells()}
		k++
	}
	return st.relays[r]
}

// tamper applies p's behaviour to forward cell c of e; it returns false if
// the cell is not to be sent now (dropped, or held and sent later).
func (p *relayProc) tamper(e *rcirc, c *circuit.Cell) bool {
	if e.next == nil {
		return true
	}
	w := p.r.w
	cfg := w.advConfig(p.r)
	a := e.adv
	if a == nil {
		a = &advCirc{}
		e.adv = a
	}
	a.seen++
	if a.down == nil {
		// The first cell this relay passes on is the first RELAY cell
		// the next hop gets: start counting there.
		if d := downstream(e); d != nil {
			if d.adv == nil {
				d.adv = &advCirc{}
			}
			d.adv.hop = 1
			a.down = d.adv
		}
	}
	if cfg == nil || cfg.cfg.Behaviour == "passive" || a.seen <= cfg.cfg.Skip ||
		(cfg.cells > 0 && a.affected >= cfg.cells) ||
		(cfg.cfg.Fraction < 1 && w.attacks().rng.Float64() >= cfg.cfg.Fraction) {
		a.sent++
		return true
	}
	a.affected++
	m := &w.m.Adversary
	switch cfg.cfg.Behaviour {
	case "delay":
		m.CellsDelayed++
		if !a.delayed {
			a.delayed = true
			m.CircuitsDelayed++
			if a.down != nil {
				a.down.delayRec = &tamperRecord{}
			}
		}
		held := *c
		w.sim.After(cfg.cfg.Delay.Duration, func() {
			if !p.dead && !e.dead && e.next != nil && !e.next.l.Closed() {
				p.send(e.next, &held)
			}
		})
		return false
	case "tag":
		c.Payload[0] ^= 0x01
	}
	m.CellsTampered++
	if !a.tampered {
		a.tampered = true
		m.Tampered++
		rec := &tamperRecord{}
		if a.down != nil && a.down.tamperAt == 0 {
			a.down.tamperAt, a.down.rec = a.sent+1, rec
			rec.down, rec.at = a.down, a.sent+1
		}
		st := w.attacks()
		st.records = append(st.records, rec)
		for d := downstream(e); d != nil; d = downstream(d) {
			if w.owner(d).behaviour != "" {
				m.ReachedColluder++
				break
			}
		}
	}
	if cfg.cfg.Behaviour == "drop" {
		return false
	}
	a.sent++
	return true
}

// noteForward is called by the relay that received a forward RELAY cell on
// e, with the result of its layer check (e.acts holds what it will do).
func (w *World) noteForward(e *rcirc, p *relayProc, err error) {
	a := e.adv
	if a == nil || a.hop == 0 {
		return
	}
	a.arrived++
	m := &w.m.Adversary
	if a.delayRec != nil && err != nil && !a.delayRec.detected {
		a.delayRec.detected = true
		m.DelayDetected++
	}
	post := a.tamperAt > 0 && a.arrived >= a.tamperAt
	if post {
		switch {
		case err != nil && !a.rec.detected:
			a.rec.detected = true
			if a.hop == 1 {
				m.DetectedNextHop++
			}
		case err == nil:
			m.DeliveredAfter++
			if p.r.behaviour != "" {
				m.ColluderAccepted++
			}
		}
	}
	if err != nil || e.next == nil || len(e.acts.ToNext) == 0 {
		return
	}
	if a.down == nil {
		if d := downstream(e); d != nil {
			if d.adv == nil {
				d.adv = &advCirc{}
			}
			d.adv.hop = a.hop + 1
			a.down = d.adv
		}
	}
	if post && a.down != nil && a.down.tamperAt == 0 {
		a.down.tamperAt, a.down.rec = a.sentDown+1, a.rec
	}
	a.sentDown += len(e.acts.ToNext)
}

// downstream returns the circuit e continues as at the next relay, if
// that relay has it.
func downstream(e *rcirc) *rcirc {
	if e.next == nil || e.next.l.Closed() {
		return nil
	}
	other, _ := e.next.l.State[1-e.next.side].(*rlink)
	if other == nil {
		return nil
	}
	if cs, ok := other.circs[e.nextID]; ok && cs.prev {
		return cs.e
	}
	return nil
}

// owner is the relay that holds circuit e.
func (w *World) owner(e *rcirc) *Relay {
	return w.byNode[e.prev.l.End(e.prev.side).ID]
}

// attackState is the world's adversary bookkeeping (maps for lookup only).
type attackState struct {
	rng    *simnet.Rand
	relays map[*Relay]*advRelay
	procs  map[*relayProc]*procState
	floods []*flood
	// flooders maps an attacking node to its flood.
	flooders map[simnet.NodeID]*flood
	// records are the tampered circuits, in order.
	records []*tamperRecord
}

// neverArrived counts tampered circuits whose tampered cell never reached
// the next hop's layer check (see report.AdversaryStats.NeverArrived).
func (w *World) neverArrived() int {
	if w.attack == nil {
		return 0
	}
	n := 0
	for _, rec := range w.attack.records {
		if !rec.detected && (rec.down == nil || rec.down.arrived < rec.at) {
			n++
		}
	}
	return n
}

func (w *World) attacks() *attackState {
	if w.attack == nil {
		w.attack = &attackState{rng: w.sim.Stream("adversary"), relays: map[*Relay]*advRelay{},
			procs: map[*relayProc]*procState{}, flooders: map[simnet.NodeID]*flood{}}
	}
	return w.attack
}
