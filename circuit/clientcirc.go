package circuit

import (
	"fmt"
	"io"
	"net/netip"
	"time"
)

// HopSpec is what the client knows of a relay from the consensus.
type HopSpec struct {
	Identity   [32]byte
	LinkKey    [32]byte
	OnionKey   [32]byte
	OnionKeyPQ []byte // ML-KEM-768 encapsulation key, 1184 bytes
	Addr       netip.AddrPort
}

// handshake starts the hybrid handshake with hop for position pos.
func (hop *HopSpec) handshake(rand io.Reader, pos int) (*ClientHandshake, []byte, error) {
	onion, err := ParseOnionPublic(hop.OnionKey, hop.OnionKeyPQ)
	if err != nil {
		return nil, nil, err
	}
	return NewHybridClientHandshake(rand, hop.Identity, onion, pos)
}

// ClientCircuit is a circuit as its client sees it: one layer per hop
// built so far, a handshake in progress, and the streams that exit at the
// last hop. The driver calls it under the circuit's lock.
type ClientCircuit struct {
	hops     []*hopLayer
	pending  *ClientHandshake
	ep       endpoint
	frags    msgAssembler
	resolves map[uint16]bool // RESOLVE requests awaiting an answer
	now      func() time.Time
	rand     io.Reader // from Create: for SENDME padding
	nextID   uint16
	acts     *ClientActions
	cell     Cell
}

// ClientActions is what the driver must do after a call.
type ClientActions struct {
	ToLink    []Cell          // cells for the first hop (driver sets CircID)
	Extended  bool            // a hop was added
	Connected []uint16        // streams the exit opened (see StreamAddr)
	Resolved  []ResolveAnswer // answers to Resolve
	// Stream bytes, streams the exit closed, streams that may send again.
	StreamActions
}

// Reset empties a for reuse.
func (a *ClientActions) Reset() {
	a.ToLink = a.ToLink[:0]
	a.Extended = false
	a.Connected, a.Resolved = a.Connected[:0], a.Resolved[:0]
	a.StreamActions.reset()
}

// NewClientCircuit returns an empty circuit. now is the clock congestion
// control measures round trips with (time.Now, or a simulator's clock).
func NewClientCircuit(now func() time.Time) *ClientCircuit {
	return &ClientCircuit{nextID: 1, now: now}
}

// Hops is the number of hops built.
func (c *ClientCircuit) Hops() int { return len(c.hops) }

// PreparedHop is a hybrid handshake with one relay, started before the
// circuit needs it. A client prepares the later hops while the earlier
// hops' round trips are under way, which takes their key generation and
// KEM encapsulation (about 0.1 ms each) off the build's critical path. The
// handshake is bound to its position; a PreparedHop is used at most once.
type PreparedHop struct {
	hop  HopSpec
	pos  int
	h    *ClientHandshake
	msg1 []byte
}

// PrepareHop starts the hybrid handshake with hop for position pos (1 is
// the first hop).
func PrepareHop(rand io.Reader, hop HopSpec, pos int) (*PreparedHop, error) {
	h, msg1, err := hop.handshake(rand, pos)
	if err != nil {
		return nil, err
	}
	return &PreparedHop{hop: hop, pos: pos, h: h, msg1: msg1}, nil
}

// take hands out p's handshake for position pos, once.
func (p *PreparedHop) take(pos int) (*ClientHandshake, []byte, error) {
	if p == nil || p.h == nil {
		return nil, nil, fmt.Errorf("%w: prepared handshake missing or already used", ErrProtocol)
	}
	if p.pos != pos {
		return nil, nil, fmt.Errorf("%w: handshake prepared for hop %d used for hop %d", ErrProtocol, p.pos, pos)
	}
	h, msg1 := p.h, p.msg1
	p.h, p.msg1 = nil, nil
	return h, msg1, nil
}

// Create starts the first hop with the hybrid handshake and returns the
// payloads of the CREATE cells to send, in order.
func (c *ClientCircuit) Create(rand io.Reader, hop HopSpec) ([][PayloadSize]byte, error) {
	if len(c.hops) != 0 || c.pending != nil {
		return nil, fmt.Errorf("%w: CREATE on a started circuit", ErrProtocol)
	}
	p, err := PrepareHop(rand, hop, 1)
	if err != nil {
		return nil, err
	}
	return c.CreatePrepared(rand, p)
}

// CreatePrepared is Create with a handshake prepared for position 1. rand
// is kept for SENDME padding.
func (c *ClientCircuit) CreatePrepared(rand io.Reader, p *PreparedHop) ([][PayloadSize]byte, error) {
	if len(c.hops) != 0 || c.pending != nil {
		return nil, fmt.Errorf("%w: CREATE on a started circuit", ErrProtocol)
	}
	h, msg1, err := p.take(1)
	if err != nil {
		return nil, err
	}
	payloads, err := CreatePayloads(HandshakeHybrid, msg1)
	if err != nil {
		return nil, err
	}
	c.pending, c.rand = h, rand
	return payloads, nil
}

// HandleCreated completes the first hop.
func (c *ClientCircuit) HandleCreated(payload *[PayloadSize]byte) error {
	if len(c.hops) != 0 || c.pending == nil {
		return fmt.Errorf("%w: unexpected CREATED", ErrProtocol)
	}
	msg2, err := DecodeCreated(payload[:])
	if err != nil {
		return err
	}
	return c.finishHop(msg2)
}

func (c *ClientCircuit) finishHop(msg2 []byte) error {
	keys, err := c.pending.Finish(msg2)
	c.pending = nil
	if err != nil {
		return err
	}
	hop, err := newHopLayer(keys, len(c.hops)+1)
	if err != nil {
		return err
	}
	c.hops = append(c.hops, hop)
	c.ep = newEndpoint(MaxDataSize(hop.pos), c.emitForward, c.now, c.rand, &hop.forward, &hop.backward)
	return nil
}

// Extend asks the last hop to extend to hop; the EXTEND cell is in a.ToLink.
func (c *ClientCircuit) Extend(rand io.Reader, hop HopSpec, a *ClientActions) error {
	if err := c.canExtend(); err != nil {
		return err
	}
	p, err := PrepareHop(rand, hop, len(c.hops)+1)
	if err != nil {
		return err
	}
	return c.ExtendPrepared(p, a)
}

func (c *ClientCircuit) canExtend() error {
	if len(c.hops) == 0 || c.pending != nil || len(c.ep.streams) > 0 {
		return fmt.Errorf("%w: cannot extend now", ErrProtocol)
	}
	if len(c.hops) >= MaxHops {
		return fmt.Errorf("%w: circuit too long", ErrProtocol)
	}
	return nil
}

// ExtendPrepared is Extend with a handshake prepared for the next position.
func (c *ClientCircuit) ExtendPrepared(p *PreparedHop, a *ClientActions) error {
	c.acts = a
	if err := c.canExtend(); err != nil {
		return err
	}
	h, msg1, err := p.take(len(c.hops) + 1)
	if err != nil {
		return err
	}
	hop := &p.hop
	req := ExtendRequest{Identity: hop.Identity, LinkKey: hop.LinkKey, Addr: hop.Addr, HType: HandshakeHybrid, Handshake: msg1}
	data, err := req.Encode()
	if err != nil {
		return err
	}
	if err := emitFragmented(c.emitForward, RelayMsg{Cmd: RelayExtend, Data: data}, c.ep.maxData); err != nil {
		return err
	}
	c.pending = h
	return nil
}

// emitForward seals a message for the last hop through every layer.
func (c *ClientCircuit) emitForward(m RelayMsg) error {
	last := len(c.hops)
	cell := &c.cell
	cell.Cmd = CmdRelay
	if err := EncodeRelayMsg(cell.Payload[:BodySize(last)], m); err != nil {
		return err
	}
	flag := FlagLocal
	for i := last - 1; i >= 0; i-- {
		if err := c.hops[i].sealForward(&cell.Payload, flag); err != nil {
			return err
		}
		flag = FlagForward
	}
	c.acts.ToLink = append(c.acts.ToLink, *cell)
	return nil
}

// SendDrop queues a DROP message for the last hop, which discards it
// (spec §5.8: long-range padding; congestion control does not count it).
// The cell costs every hop exactly what a DATA cell costs: load
// generators use it to drive relays without an exit.
func (c *ClientCircuit) SendDrop(a *ClientActions) error {
	if len(c.hops) == 0 {
		return fmt.Errorf("%w: no hop to send to", ErrProtocol)
	}
	c.acts = a
	return c.emitForward(RelayMsg{Cmd: RelayDrop})
}

// HandleBackward processes a RELAY cell from the first hop. Any error
// means the circuit must be destroyed.
func (c *ClientCircuit) HandleBackward(payload *[PayloadSize]byte, a *ClientActions) error {
	c.acts = a
	for i, hop := range c.hops {
		flag, err := hop.openBackward(payload)
		if err != nil {
			return err
		}
		if flag == FlagForward {
			continue
		}
		m, err := DecodeRelayMsg(payload[:BodySize(hop.pos)])
		if err != nil {
			return err
		}
		m, complete, err := c.frags.add(m, i+1)
		if err != nil || !complete {
			return err
		}
		return c.handleLocal(i+1, m)
	}
	return fmt.Errorf("%w: cell forwarded past the last hop", ErrProtocol)
}

func (c *ClientCircuit) handleLocal(from int, m RelayMsg) error {
	a := c.acts
	if m.Cmd == RelayDrop {
		return nil
	}
	if m.Cmd == RelayExtended {
		if from != len(c.hops) || c.pending == nil {
			return fmt.Errorf("%w: unexpected EXTENDED", ErrProtocol)
		}
		msg2, err := DecodeCreated(m.Data)
		if err != nil {
			return err
		}
		if err := c.finishHop(msg2); err != nil {
			return err
		}
		a.Extended = true
		return nil
	}
	if from != len(c.hops) || c.pending != nil {
		return fmt.Errorf("%w: stream message from hop %d", ErrProtocol, from)
	}
	switch m.Cmd {
	case RelayConnected:
		s, ok := c.ep.streams[m.StreamID]
		if !ok || s.open {
			return fmt.Errorf("%w: unexpected CONNECTED", ErrProtocol)
		}
		addr, err := DecodeConnected(m.Data)
		if err != nil {
			return err
		}
		s.open, s.addr = true, addr
		a.Connected = append(a.Connected, m.StreamID)
	case RelayResolved:
		return c.handleResolved(m)
	default:
		if handled, err := c.ep.handleStreamMsg(m, &a.StreamActions); handled {
			return err
		}
		return fmt.Errorf("%w: relay command %d not for a client", ErrProtocol, m.Cmd)
	}
	return nil
}

// OpenStream sends BEGIN for host:port to the last hop and returns the new
// stream's ID.
func (c *ClientCircuit) OpenStream(host string, port uint16, a *ClientActions) (uint16, error) {
	c.acts = a
	if len(c.hops) == 0 || c.pending != nil {
		return 0, fmt.Errorf("%w: circuit not built", ErrProtocol)
	}
	data, err := EncodeBegin(host, port)
	if err != nil {
		return 0, err
	}
	id, err := c.allocStreamID()
	if err != nil {
		return 0, err
	}
	if err := c.ep.addStream(id); err != nil {
		return 0, err
	}
	if err := c.emitForward(RelayMsg{Cmd: RelayBegin, StreamID: id, Data: data}); err != nil {
		delete(c.ep.streams, id)
		return 0, err
	}
	return id, nil
}

func (c *ClientCircuit) allocStreamID() (uint16, error) {
	for range 1 << 16 {
		id := c.nextID
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if _, used := c.ep.streams[id]; !used && !c.resolves[id] && id != 0 {
			return id, nil
		}
	}
	return 0, ErrTooManyStreams
}

// CloseStream sends END for stream id.
func (c *ClientCircuit) CloseStream(id uint16, a *ClientActions) error {
	c.acts = a
	if _, ok := c.ep.streams[id]; !ok {
		return nil
	}
	delete(c.ep.streams, id)
	return c.emitForward(RelayMsg{Cmd: RelayEnd, StreamID: id, Data: []byte{byte(EndDone)}})
}

// CanPackage reports whether stream id may send data now.
func (c *ClientCircuit) CanPackage(id uint16) bool { return c.ep.canSend(id) }

// PackageData sends as much of data as the windows allow; see
// RelayCircuit.PackageData.
func (c *ClientCircuit) PackageData(id uint16, data []byte, a *ClientActions) (int, error) {
	c.acts = a
	return c.ep.packageData(id, data)
}

// StreamConsumed reports that the application read n cells of stream id.
func (c *ClientCircuit) StreamConsumed(id uint16, n int, a *ClientActions) error {
	c.acts = a
	return c.ep.consumed(id, n)
}

// StreamCount is the number of open streams.
func (c *ClientCircuit) StreamCount() int { return len(c.ep.streams) }
