package relay

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/internal/linkio"
)

// forgedCirc is a client circuit the test builds from the spec (circuit.md
// §4: AES-256-GCM per hop, counter nonces, SealedWidth/BodySize layout)
// instead of package circuit's ClientCircuit, so that an attack test can
// send what an honest client never would: a 257th BEGIN on one circuit, an
// EXTEND from the last allowed hop, cells replayed into another circuit.
// Hops use the classical NK handshake (relays accept it), whose first
// message fits one CREATE or EXTEND cell.
type forgedCirc struct {
	t     *testing.T
	link  *linkio.Conn
	id    uint32
	hops  []*forgedHop
	cells chan circuit.Cell
	// pending is the handshake of the EXTEND last built by extendMsg.
	pending *circuit.ClientHandshake
}

type forgedHop struct {
	pos        int
	fwd, bwd   cipher.AEAD
	fctr, bctr uint64
}

func gcm(key [32]byte) cipher.AEAD {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return a
}

func layerNonce(ctr uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], ctr)
	return n[:]
}

// forgeCircuit dials spec over a fresh client link from the local address
// from and creates a one-hop circuit with circuit ID id.
func forgeCircuit(t *testing.T, spec circuit.HopSpec, from string, id uint32) *forgedCirc {
	t.Helper()
	link, err := dialFrom(t, spec, from)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	f := &forgedCirc{t: t, link: link, id: id, cells: make(chan circuit.Cell, 4096)}
	go link.ReadLoop(func(c *circuit.Cell) error { f.cells <- *c; return nil })
	h, msg1, err := circuit.NewClientHandshake(rand.Reader, spec.Identity, spec.OnionKey, 1)
	if err != nil {
		t.Fatal(err)
	}
	payloads, err := circuit.CreatePayloads(circuit.HandshakeNK, msg1)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range payloads {
		f.send(circuit.Cell{CircID: id, Cmd: circuit.CmdCreate, Payload: p})
	}
	c := f.next()
	if c.Cmd != circuit.CmdCreated {
		t.Fatalf("got cell %d, want CREATED", c.Cmd)
	}
	msg2, err := circuit.DecodeCreated(c.Payload[:])
	if err != nil {
		t.Fatal(err)
	}
	keys, err := h.Finish(msg2)
	if err != nil {
		t.Fatal(err)
	}
	f.addHop(keys)
	return f
}

func (f *forgedCirc) addHop(k *circuit.HopKeys) {
	f.hops = append(f.hops, &forgedHop{pos: len(f.hops) + 1, fwd: gcm(k.Forward), bwd: gcm(k.Backward)})
}

func (f *forgedCirc) send(c circuit.Cell) {
	if err := f.link.Send(&c); err != nil {
		f.t.Fatal(err)
	}
}

func (f *forgedCirc) next() circuit.Cell {
	select {
	case c := <-f.cells:
		return c
	case <-time.After(20 * time.Second):
		f.t.Fatal("no cell from the relay within 20 s")
		return circuit.Cell{}
	}
}

// seal wraps m for the last hop in every hop's forward layer.
func (f *forgedCirc) seal(m circuit.RelayMsg) circuit.Cell {
	c := circuit.Cell{CircID: f.id, Cmd: circuit.CmdRelay}
	last := len(f.hops)
	if err := circuit.EncodeRelayMsg(c.Payload[:circuit.BodySize(last)], m); err != nil {
		f.t.Fatal(err)
	}
	flag := circuit.FlagLocal
	for i := last - 1; i >= 0; i-- {
		h := f.hops[i]
		body := circuit.BodySize(h.pos)
		c.Payload[body] = flag
		h.fwd.Seal(c.Payload[:0], layerNonce(h.fctr), c.Payload[:body+1], nil)
		h.fctr++
		flag = circuit.FlagForward
	}
	return c
}

// sendMsg seals m and sends it.
func (f *forgedCirc) sendMsg(m circuit.RelayMsg) { f.send(f.seal(m)) }

var errNotRelay = errors.New("test: not a RELAY cell")

// open peels the backward layers of a RELAY cell and returns the hop that
// sent it and its message.
func (f *forgedCirc) open(c *circuit.Cell) (int, circuit.RelayMsg, error) {
	if c.Cmd != circuit.CmdRelay {
		return 0, circuit.RelayMsg{}, errNotRelay
	}
	for _, h := range f.hops {
		w := circuit.SealedWidth(h.pos)
		if _, err := h.bwd.Open(c.Payload[:0], layerNonce(h.bctr), c.Payload[:w], nil); err != nil {
			return 0, circuit.RelayMsg{}, circuit.ErrAuth
		}
		h.bctr++
		body := circuit.BodySize(h.pos)
		if c.Payload[body] == circuit.FlagLocal {
			m, err := circuit.DecodeRelayMsg(c.Payload[:body])
			return h.pos, m, err
		}
	}
	return 0, circuit.RelayMsg{}, errors.New("test: cell forwarded past the last hop")
}

// recv returns the next RELAY message, or fails on any other cell.
func (f *forgedCirc) recv() circuit.RelayMsg {
	f.t.Helper()
	c := f.next()
	_, m, err := f.open(&c)
	if err != nil {
		f.t.Fatalf("cell %d: %v", c.Cmd, err)
	}
	return m
}

// extend adds hop with an NK handshake in one EXTEND cell.
func (f *forgedCirc) extend(hop circuit.HopSpec) {
	f.t.Helper()
	f.sendMsg(f.extendMsg(hop))
	m := f.recv()
	if m.Cmd != circuit.RelayExtended {
		f.t.Fatalf("got relay command %d, want EXTENDED", m.Cmd)
	}
	msg2, err := circuit.DecodeCreated(m.Data)
	if err != nil {
		f.t.Fatal(err)
	}
	keys, err := f.pending.Finish(msg2)
	if err != nil {
		f.t.Fatal(err)
	}
	f.addHop(keys)
}

// extendMsg builds an EXTEND to hop and keeps its handshake in pending.
func (f *forgedCirc) extendMsg(hop circuit.HopSpec) circuit.RelayMsg {
	f.t.Helper()
	// Beyond MaxHops no handshake can be made for the true position: an
	// attacker sends one for the last valid position instead.
	pos := min(len(f.hops)+1, circuit.MaxHops)
	h, msg1, err := circuit.NewClientHandshake(rand.Reader, hop.Identity, hop.OnionKey, pos)
	if err != nil {
		f.t.Fatal(err)
	}
	f.pending = h
	req := circuit.ExtendRequest{Identity: hop.Identity, LinkKey: hop.LinkKey, Addr: hop.Addr, HType: circuit.HandshakeNK, Handshake: msg1}
	data, err := req.Encode()
	if err != nil {
		f.t.Fatal(err)
	}
	return circuit.RelayMsg{Cmd: circuit.RelayExtend, Data: data}
}

// begin sends BEGIN host:port on stream id.
func (f *forgedCirc) begin(id uint16, host string, port uint16) {
	f.t.Helper()
	data, err := circuit.EncodeBegin(host, port)
	if err != nil {
		f.t.Fatal(err)
	}
	f.sendMsg(circuit.RelayMsg{Cmd: circuit.RelayBegin, StreamID: id, Data: data})
}
