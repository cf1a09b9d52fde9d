package world

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/relay"
	"github.com/veilnet/veil/sim/simnet"
)

// halfCreatePeer is a node that opens one link to a relay and sends raw
// CREATE cells on it; it records every cell the relay sends back.
type halfCreatePeer struct {
	node *simnet.Node
	link *simnet.Link
	got  []circuit.Cell
}

var _ simnet.Handler = (*halfCreatePeer)(nil)

func (h *halfCreatePeer) Accepted(l *simnet.Link)              { l.Close(h.node) }
func (h *halfCreatePeer) Cell(_ *simnet.Link, c *circuit.Cell) { h.got = append(h.got, *c) }
func (h *halfCreatePeer) Closed(l *simnet.Link) {
	if h.link == l {
		h.link = nil
	}
}

// halfCreateRun is one run of TestPendingCreateTimeout's network.
type halfCreateRun struct {
	w      *World
	target *Relay
	peer   *halfCreatePeer
	rl     *rlink // the target's side of the peer's link
	t0     time.Time
}

// Half-received CREATEs in the test: more than a link may have pending.
const halfCreates = maxPendingCreates + 8

// startHalfCreates builds the tiny network, adds a peer that links to
// relay0 and, at t0, sends it the first cell only of halfCreates
// hybrid CREATEs under fresh circuit IDs, then runs to t0 + 1 s.
func startHalfCreates(t *testing.T, seed uint64) *halfCreateRun {
	t.Helper()
	w := newWorld(t, load(t, "tiny"), seed)
	run := &halfCreateRun{w: w, target: w.relays[0], peer: &halfCreatePeer{}}
	peer := run.peer
	peer.node = w.net.AddNode("half-create-peer", 0, netip.MustParseAddr("10.250.0.1"), 0, peer)
	w.net.Dial(peer.node, run.target.node, func(l *simnet.Link, err error) {
		if err != nil {
			t.Errorf("dialing %s: %v", run.target.name, err)
			return
		}
		peer.link = l
	})
	run.t0 = simnet.Epoch.Add(5 * time.Second)
	w.RunUntil(run.t0)
	if peer.link == nil {
		t.Fatalf("no link to %s after %v", run.target.name, run.t0.Sub(simnet.Epoch))
	}
	run.rl = peer.link.State[peer.link.Side(run.target.node)].(*rlink)

	rs := w.cons.Relay(run.target.id)
	if rs == nil {
		t.Fatalf("%s is not in the consensus", run.target.name)
	}
	cc := circuit.NewClientCircuit(w.sim.Now)
	payloads, err := cc.Create(w.sim.Stream("half-create-peer"), client.HopSpec(rs))
	if err != nil {
		t.Fatal(err)
	}
	if len(payloads) < 2 {
		t.Fatalf("a hybrid CREATE is %d cells; the test needs a fragmented one", len(payloads))
	}
	for i := range halfCreates {
		c := circuit.Cell{CircID: circuit.CircIDHighBit | uint32(1+i), Cmd: circuit.CmdCreate, Payload: payloads[0]}
		if err := peer.link.Send(peer.node, &c); err != nil {
			t.Fatal(err)
		}
	}
	w.RunUntil(run.t0.Add(time.Second))
	return run
}

// TestPendingCreateTimeout: a peer that sends only the first cell of
// many fragmented CREATEs fills its link's maxPendingCreates slots at a
// relay, and the CREATEs beyond are refused with DESTROY(RESOURCELIMIT);
// relay.CreateTimeout of virtual time later the relay has dropped the
// half-received CREATEs, silently as the real relay does, and a complete
// CREATE on the same link builds a circuit. Without the timeout the slots
// stay full for the life of the link and that CREATE is refused.
func TestPendingCreateTimeout(t *testing.T) {
	run := startHalfCreates(t, 1)
	w, rl, peer := run.w, run.rl, run.peer

	// The slots fill; the rest is refused.
	if n := len(rl.pending); n != maxPendingCreates {
		t.Fatalf("%d CREATEs pending on the link after %d first cells, want %d", n, halfCreates, maxPendingCreates)
	}
	refused := map[uint32]bool{}
	for _, c := range peer.got {
		if c.Cmd != circuit.CmdDestroy || circuit.DestroyReason(c.Payload[0]) != circuit.DestroyResourceLimit {
			t.Fatalf("the relay sent cmd %d (payload[0] %d) on circuit %#x, want only DESTROY(RESOURCELIMIT)", c.Cmd, c.Payload[0], c.CircID)
		}
		refused[c.CircID] = true
	}
	if len(refused) != halfCreates-maxPendingCreates || len(peer.got) != len(refused) {
		t.Fatalf("%d DESTROYs for %d circuits, want one each for the %d CREATEs over the limit",
			len(peer.got), len(refused), halfCreates-maxPendingCreates)
	}
	for id := range rl.pending {
		if refused[id] {
			t.Fatalf("circuit %#x is both pending and refused", id)
		}
	}

	// Not before the timeout: the cells arrived after t0.
	w.RunUntil(run.t0.Add(relay.CreateTimeout))
	if n := len(rl.pending); n != maxPendingCreates {
		t.Fatalf("%d CREATEs pending %v after they were sent, want %d still", n, relay.CreateTimeout, maxPendingCreates)
	}

	// After it: all dropped, without a word to the peer.
	w.RunUntil(run.t0.Add(relay.CreateTimeout + time.Second))
	if n := len(rl.pending); n != 0 {
		t.Fatalf("%d CREATEs still pending %v after they were sent (relay.CreateTimeout %v)", n, relay.CreateTimeout+time.Second, relay.CreateTimeout)
	}
	if rl.createTimer != nil {
		t.Error("the CREATE timer is still set with nothing pending")
	}
	if rl.l.Closed() {
		t.Fatal("the relay closed the link")
	}
	if len(peer.got) != len(refused) {
		t.Errorf("the relay sent %d cells when it dropped the half-received CREATEs, want none (the real relay sends nothing)", len(peer.got)-len(refused))
	}

	// An honest CREATE on the same link builds a circuit.
	before, sent := run.target.circuits, len(peer.got)
	rs := w.cons.Relay(run.target.id)
	cc := circuit.NewClientCircuit(w.sim.Now)
	payloads, err := cc.Create(w.sim.Stream("honest"), client.HopSpec(rs))
	if err != nil {
		t.Fatal(err)
	}
	id := circuit.CircIDHighBit | uint32(halfCreates+1)
	for i := range payloads {
		c := circuit.Cell{CircID: id, Cmd: circuit.CmdCreate, Payload: payloads[i]}
		if err := peer.link.Send(peer.node, &c); err != nil {
			t.Fatal(err)
		}
	}
	w.RunUntil(w.sim.Now().Add(5 * time.Second))
	if len(peer.got) != sent+1 {
		t.Fatalf("the relay answered the honest CREATE with %d cells, want one CREATED", len(peer.got)-sent)
	}
	reply := peer.got[sent]
	if reply.CircID != id || reply.Cmd != circuit.CmdCreated {
		t.Fatalf("the relay answered the honest CREATE with cmd %d (payload[0] %d) on circuit %#x, want CREATED on %#x",
			reply.Cmd, reply.Payload[0], reply.CircID, id)
	}
	if err := cc.HandleCreated(&reply.Payload); err != nil {
		t.Fatalf("the honest circuit's CREATED: %v", err)
	}
	if cc.Hops() != 1 || run.target.circuits != before+1 || rl.circs[id].e == nil {
		t.Fatalf("honest circuit: %d hops, relay accepted %d circuits (was %d), in the link's table: %v",
			cc.Hops(), run.target.circuits, before, rl.circs[id].e != nil)
	}
}

// TestPendingCreateTimeoutDeterministic: with the half-received CREATEs
// and their timeout, a seed still gives byte-identical metrics and the
// same cells to the peer.
func TestPendingCreateTimeoutDeterministic(t *testing.T) {
	runOnce := func() ([]byte, []circuit.Cell) {
		run := startHalfCreates(t, 3)
		run.w.RunUntil(run.t0.Add(relay.CreateTimeout + 5*time.Second))
		if n := len(run.rl.pending); n != 0 {
			t.Fatalf("%d CREATEs still pending after the timeout", n)
		}
		b, err := run.w.Metrics().JSON()
		if err != nil {
			t.Fatal(err)
		}
		return b, run.peer.got
	}
	a, ga := runOnce()
	b, gb := runOnce()
	if !bytes.Equal(a, b) {
		t.Error("two runs with seed 3 gave different metrics")
	}
	if len(ga) != len(gb) {
		t.Fatalf("the peer got %d cells in one run and %d in the other", len(ga), len(gb))
	}
	for i := range ga {
		if ga[i] != gb[i] {
			t.Fatalf("cell %d the peer got differs between the runs", i)
		}
	}
}

// TestHalfCreatesForgottenWhenLinkCloses: when the peer closes the link,
// the relay forgets its half-received CREATEs at once (not at the
// timeout), and createGate forgets the refused CREATEs whose
// continuations it was waiting for on that link.
func TestHalfCreatesForgottenWhenLinkCloses(t *testing.T) {
	run := startHalfCreates(t, 1)
	w, rl, peer := run.w, run.rl, run.peer
	if n := len(rl.pending); n != maxPendingCreates {
		t.Fatalf("%d CREATEs pending, want %d", n, maxPendingCreates)
	}
	// More first cells than the CREATE rate limit's burst: those it
	// refuses leave their continuations to drop.
	cc := circuit.NewClientCircuit(w.sim.Now)
	payloads, err := cc.Create(w.sim.Stream("more"), client.HopSpec(w.cons.Relay(run.target.id)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range relay.DefaultCreateBurst {
		c := circuit.Cell{CircID: circuit.CircIDHighBit | uint32(halfCreates+1+i), Cmd: circuit.CmdCreate, Payload: payloads[0]}
		if err := peer.link.Send(peer.node, &c); err != nil {
			t.Fatal(err)
		}
	}
	w.RunUntil(w.sim.Now().Add(time.Second))
	owed := func() int {
		n := 0
		for k := range w.procState(run.target.proc).refused {
			if k.link == rl.l.ID {
				n++
			}
		}
		return n
	}
	if owed() == 0 {
		t.Fatal("the CREATE rate limit refused nothing; the test needs refused CREATEs with continuations owed")
	}

	peer.link.Close(peer.node)
	w.RunUntil(w.sim.Now().Add(time.Second))
	if w.sim.Now().Sub(run.t0) >= relay.CreateTimeout {
		t.Fatal("the test ran into the CREATE timeout")
	}
	if n := len(rl.pending); n != 0 || rl.createTimer != nil {
		t.Errorf("%d CREATEs pending (timer set: %v) on a closed link", n, rl.createTimer != nil)
	}
	if n := owed(); n != 0 {
		t.Errorf("%d refused CREATEs still owe continuations on a closed link", n)
	}
}
