package relay

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/relay/metrics"
)

// expectDestroy reads cells until a DESTROY for f's circuit and returns its
// reason; any RELAY cell before it fails the test (the attacker must learn
// nothing but the teardown).
func (f *forgedCirc) expectDestroy() circuit.DestroyReason {
	f.t.Helper()
	for {
		c := f.next()
		if c.CircID != f.id {
			continue
		}
		if c.Cmd != circuit.CmdDestroy {
			f.t.Fatalf("got cell %d, want DESTROY", c.Cmd)
		}
		return circuit.DestroyReason(c.Payload[0])
	}
}

// TestAttackReplayedCreate: a CREATE recorded on one link and replayed on
// another gets a CREATED with a fresh relay ephemeral (different bytes, so
// different keys); the recorded circuit's later cells, replayed into the
// new circuit, fail the layer check and the relay destroys it without
// acting on them (the recorded BEGIN reaches no target a second time).
// The original circuit keeps working.
func TestAttackReplayedCreate(t *testing.T) {
	r, spec, cancel, done := startRelay(t, nil)
	defer func() { cancel(); <-done }()
	hold := newHoldServer(t)
	echo := echoServer(t)

	// The victim builds a circuit; the attacker records its cells.
	const id = circuit.CircIDHighBit | 9
	link, err := dialFrom(t, spec, "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	f := &forgedCirc{t: t, link: link, id: id, cells: make(chan circuit.Cell, 64)}
	go link.ReadLoop(func(c *circuit.Cell) error { f.cells <- *c; return nil })
	h, msg1, _ := circuit.NewClientHandshake(rand.Reader, spec.Identity, spec.OnionKey, 1)
	creates, _ := circuit.CreatePayloads(circuit.HandshakeNK, msg1)
	for _, p := range creates {
		f.send(circuit.Cell{CircID: id, Cmd: circuit.CmdCreate, Payload: p})
	}
	created := f.next()
	msg2, _ := circuit.DecodeCreated(created.Payload[:])
	keys, err := h.Finish(msg2)
	if err != nil {
		t.Fatal(err)
	}
	f.addHop(keys)
	data, _ := circuit.EncodeBegin("127.0.0.1", hold.addr.Port())
	recorded := []circuit.Cell{f.seal(circuit.RelayMsg{Cmd: circuit.RelayBegin, StreamID: 1, Data: data}), f.seal(circuit.RelayMsg{Cmd: circuit.RelayDrop})}
	for _, c := range recorded {
		f.send(c)
	}
	if m := f.recv(); m.Cmd != circuit.RelayConnected {
		t.Fatalf("victim: relay command %d, want CONNECTED", m.Cmd)
	}
	waitFor(t, func() bool { return hold.accepted.Load() == 1 })

	// The replay, from another address.
	alink, err := dialFrom(t, spec, "127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	defer alink.Close()
	a := &forgedCirc{t: t, link: alink, id: id, cells: make(chan circuit.Cell, 64)}
	go alink.ReadLoop(func(c *circuit.Cell) error { a.cells <- *c; return nil })
	for _, p := range creates {
		a.send(circuit.Cell{CircID: id, Cmd: circuit.CmdCreate, Payload: p})
	}
	replayed := a.next()
	if replayed.Cmd != circuit.CmdCreated {
		t.Fatalf("replayed CREATE: cell %d", replayed.Cmd)
	}
	if bytes.Equal(replayed.Payload[:], created.Payload[:]) {
		t.Fatal("the relay answered a replayed CREATE with the same CREATED: not a fresh ephemeral")
	}
	for _, c := range recorded {
		a.send(c)
	}
	if reason := a.expectDestroy(); reason != circuit.DestroyProtocol {
		t.Fatalf("replayed cells: DESTROY reason %d, want protocol", reason)
	}
	if hold.accepted.Load() != 1 || metricValue(r.metrics.Streams) != 1 {
		t.Fatal("the replayed BEGIN opened a stream")
	}

	// The victim's circuit is untouched.
	f.begin(2, "127.0.0.1", echo.Port())
	if m := f.recv(); m.Cmd != circuit.RelayConnected || m.StreamID != 2 {
		t.Fatalf("victim after the replay: relay command %d on stream %d", m.Cmd, m.StreamID)
	}
}

// TestAttackExtendToSelfOrBack: a relay asked to extend a circuit to
// itself, or back to the relay the circuit came from, refuses: the circuit
// is destroyed and no link or CREATE goes out. (Circuit-level twin:
// circuit.TestRelayRefusesSecondExtendAndLongCircuits.)
func TestAttackExtendToSelfOrBack(t *testing.T) {
	a, specA, cancelA, doneA := startRelay(t, nil)
	defer func() { cancelA(); <-doneA }()
	b, specB, cancelB, doneB := startRelay(t, nil)
	defer func() { cancelB(); <-doneB }()
	out := func(r *Relay) float64 { return metricValue(r.metrics.Links.WithLabelValues("outbound")) }

	// To itself.
	f := forgeCircuit(t, specA, "127.0.0.2", circuit.CircIDHighBit|1)
	f.sendMsg(f.extendMsg(specA))
	if reason := f.expectDestroy(); reason != circuit.DestroyProtocol {
		t.Fatalf("extend to self: DESTROY reason %d", reason)
	}
	if metricValue(a.metrics.Refusals.WithLabelValues(metrics.RefuseExtend)) != 1 || out(a) != 0 {
		t.Fatal("extend to self not refused at the relay")
	}

	// Back to the previous hop: A -> B, then B asked for A.
	f = forgeCircuit(t, specA, "127.0.0.2", circuit.CircIDHighBit|2)
	f.extend(specB)
	createsAtA := metricValue(a.metrics.Handshakes.WithLabelValues("circuit", "ok"))
	f.sendMsg(f.extendMsg(specA))
	f.expectDestroy() // A passes B's teardown on with no reason of B's
	if metricValue(b.metrics.Refusals.WithLabelValues(metrics.RefuseExtend)) != 1 {
		t.Fatal("extend back to the previous hop not refused")
	}
	if got := metricValue(a.metrics.Handshakes.WithLabelValues("circuit", "ok")); got != createsAtA || out(b) != 0 {
		t.Fatal("B sent a CREATE back to A")
	}
}

// TestAttackHopLimit: a circuit cycled through three relays to MaxHops
// hops (each extend goes neither to the relay itself nor back) is refused
// one more: the last relay destroys it and the relay named in the EXTEND
// sees no CREATE.
func TestAttackHopLimit(t *testing.T) {
	var specs []circuit.HopSpec
	var relays []*Relay
	for range 3 {
		r, spec, cancel, done := startRelay(t, nil)
		defer func() { cancel(); <-done }()
		specs, relays = append(specs, spec), append(relays, r)
	}
	f := forgeCircuit(t, specs[0], "127.0.0.2", circuit.CircIDHighBit|1)
	for pos := 2; pos <= circuit.MaxHops; pos++ {
		f.extend(specs[(pos-1)%3])
	}
	next := relays[circuit.MaxHops%3]
	before := metricValue(next.metrics.Handshakes.WithLabelValues("circuit", "ok"))
	f.sendMsg(f.extendMsg(specs[circuit.MaxHops%3]))
	f.expectDestroy()
	if got := metricValue(next.metrics.Handshakes.WithLabelValues("circuit", "ok")); got != before {
		t.Fatal("a CREATE for hop MaxHops+1 went out")
	}
	for _, r := range relays {
		waitFor(t, func() bool { return r.circuitCount() == 0 })
	}
}

// TestAttackExtendWrongKey: an EXTEND naming a relay's address with a link
// key that is not its own fails the link handshake (the relay dialed
// cannot answer Noise XK for a key it does not hold), and one naming the
// right link key with another relay's identity or onion key fails the
// circuit handshake: either way the client gets DESTROY and no circuit is
// built at the target. The honest extend works afterwards.
func TestAttackExtendWrongKey(t *testing.T) {
	a, specA, cancelA, doneA := startRelay(t, nil)
	defer func() { cancelA(); <-doneA }()
	b, specB, cancelB, doneB := startRelay(t, nil)
	defer func() { cancelB(); <-doneB }()
	_, specC, cancelC, doneC := startRelay(t, nil)
	defer func() { cancelC(); <-doneC }()

	other, _ := crypto.GenerateStaticKey(rand.Reader)
	wrongLink := specB
	wrongLink.LinkKey = other.Public
	f := forgeCircuit(t, specA, "127.0.0.2", circuit.CircIDHighBit|1)
	f.sendMsg(f.extendMsg(wrongLink))
	if reason := f.expectDestroy(); reason != circuit.DestroyConnectFailed {
		t.Fatalf("wrong link key: DESTROY reason %d, want connect failed", reason)
	}
	if metricValue(a.metrics.Links.WithLabelValues("outbound")) != 0 {
		t.Fatal("A kept a link to a peer with the wrong key")
	}
	waitFor(t, func() bool { return metricValue(b.metrics.Handshakes.WithLabelValues("link", "failed")) == 1 })

	wrongID := specB
	wrongID.Identity, wrongID.OnionKey = specC.Identity, specC.OnionKey
	f = forgeCircuit(t, specA, "127.0.0.2", circuit.CircIDHighBit|2)
	f.sendMsg(f.extendMsg(wrongID))
	f.expectDestroy()
	if metricValue(b.metrics.Circuits) != 0 || metricValue(b.metrics.Handshakes.WithLabelValues("circuit", "failed")) != 1 {
		t.Fatal("B built a circuit for a handshake aimed at another relay")
	}

	f = forgeCircuit(t, specA, "127.0.0.2", circuit.CircIDHighBit|3)
	f.extend(specB)
	if metricValue(b.metrics.Circuits) != 1 {
		t.Fatal("honest extend did not build a circuit at B")
	}
}
