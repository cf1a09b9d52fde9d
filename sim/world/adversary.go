package world

import (
	"github.com/veilnet/veil/circuit"
)

// Malicious relays. A "tag" relay flips one bit of the first RELAY cell it
// forwards on each circuit (the classic tagging attack on Tor's old relay
// crypto); a "drop" relay drops that cell. DESIGN.md property 2 says the
// next honest hop must detect either and destroy the circuit, so the
// attacker learns nothing from a tagged cell coming out further on.
//
// To check it, the world remembers each tampered circuit by the link and
// circuit ID the tampered cell travelled on, and the receiving relay
// reports (noteForward) what its layer check said about each later cell
// on that circuit.

// tamperKey names a circuit on one link.
type tamperKey struct {
	link uint64
	id   uint32
}

type tamperRecord struct {
	detected bool
}

// tamper applies p's behaviour to forward cell c of e; it returns false if
// the cell is to be dropped.
func (p *relayProc) tamper(e *rcirc, c *circuit.Cell) bool {
	if e.tampered || e.next == nil {
		return true
	}
	e.tampered = true
	w := p.r.w
	w.m.Adversary.Tampered++
	w.tampered[tamperKey{e.next.l.ID, e.nextID}] = &tamperRecord{}
	switch p.r.behaviour {
	case "tag":
		c.Payload[0] ^= 0x01
	case "drop":
		return false
	}
	return true
}

// noteForward is called by the relay that received a forward RELAY cell on
// e, with the result of its layer check.
func (w *World) noteForward(e *rcirc, p *relayProc, err error) {
	if len(w.tampered) == 0 {
		return
	}
	rec := w.tampered[tamperKey{e.prev.l.ID, e.prevID}]
	if rec == nil {
		return
	}
	switch {
	case err != nil && !rec.detected:
		rec.detected = true
		w.m.Adversary.DetectedNextHop++
	case err == nil:
		w.m.Adversary.DeliveredAfter++
	}
}
