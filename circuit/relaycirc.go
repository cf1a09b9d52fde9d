package circuit

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/veilnet/veil/crypto"
)

// RelayCircuit is one circuit as a relay sees it: the layer it shares with
// the client, whether it has extended, and the streams exiting here. The
// driver owns the links and sockets; it calls these methods under the
// circuit's lock and carries out the returned RelayActions.
type RelayCircuit struct {
	hop       *hopLayer
	extended  bool // an EXTEND was accepted; never a second one
	extending bool // waiting for the next hop's CREATED
	ep        endpoint
	frags     msgAssembler
	resolves  map[uint16]bool // RESOLVE requests the driver is working on
	acts      *RelayActions   // set for the duration of one call
	idleMark  uint64          // both layer counters' sum at the last ReleaseIdle
}

// RelayActions is what the driver must do after a call. Reset it between
// calls; its slices are reused.
type RelayActions struct {
	ToNext   []Cell           // cells for the next hop (driver sets CircID)
	ToPrev   []Cell           // cells toward the client (driver sets CircID)
	Extend   *ExtendRequest   // open a link to this relay and send CREATE
	Begins   []BeginRequest   // open exit streams
	Resolves []ResolveRequest // resolve names (answer with Resolved)
	// Data for exit streams, streams the client closed, streams that may
	// send again.
	StreamActions
}

// BeginRequest asks the driver to open an exit stream.
type BeginRequest struct {
	StreamID uint16
	Host     string
	Port     uint16
}

// StreamData is data for one stream. Data stays valid until the actions
// that hold it are reset: a driver copies what it keeps (its stream
// buffers), and delivering data allocates nothing per cell.
type StreamData struct {
	StreamID uint16
	Data     []byte
}

// StreamEnd reports a stream closed by the other end.
type StreamEnd struct {
	StreamID uint16
	Reason   EndReason
}

// OnlyCells reports whether a asks for nothing but cells to pass on, so
// that a driver may hold them and add the next cells' (relay/circuits.go
// runs).
func (a *RelayActions) OnlyCells() bool {
	return a.Extend == nil && len(a.Begins) == 0 && len(a.Resolves) == 0 && a.StreamActions.empty()
}

// Reset empties a for reuse.
func (a *RelayActions) Reset() {
	a.ToNext, a.ToPrev = a.ToNext[:0], a.ToPrev[:0]
	a.Extend = nil
	a.Begins, a.Resolves = a.Begins[:0], a.Resolves[:0]
	a.StreamActions.reset()
}

// AcceptCreate answers a reassembled CREATE (see CreateAssembler) with the
// relay's onion keys: the current one first, then the previous ones it
// still accepts during rotation. It returns the new circuit and the
// CREATED payload to send back.
//
// now is the clock congestion control measures round trips with: the real
// driver passes time.Now, the simulator its virtual clock.
func AcceptCreate(rand io.Reader, now func() time.Time, relayID [32]byte, onionKeys []*crypto.OnionKey, ht HandshakeType, hdata []byte) (*RelayCircuit, *[PayloadSize]byte, error) {
	var (
		msg2 []byte
		keys *HopKeys
		pos  int
		err  error
	)
	switch ht {
	case HandshakeHybrid:
		msg2, keys, pos, err = RespondHybridHandshake(rand, relayID, onionKeys, hdata)
	case HandshakeNK:
		err = ErrHandshake
		for _, k := range onionKeys {
			if msg2, keys, pos, err = RespondHandshake(rand, relayID, &k.X25519, hdata); err == nil {
				break
			}
		}
	default:
		err = fmt.Errorf("%w: unknown handshake type %d", ErrHandshake, ht)
	}
	if err != nil {
		return nil, nil, err
	}
	hop, err := newHopLayer(keys, pos)
	if err != nil {
		return nil, nil, err
	}
	rc := &RelayCircuit{hop: hop}
	rc.ep = newEndpoint(MaxDataSize(pos), rc.emitBackward, now, rand, &hop.backward, &hop.forward)
	var created [PayloadSize]byte
	if err := EncodeCreated(&created, msg2); err != nil {
		return nil, nil, err
	}
	return rc, &created, nil
}

// ReleaseIdle drops the circuit's expanded layer keys (about 1.5 KiB) if
// no cell was opened or sealed since the previous call, and reports
// whether it did; the next cell expands them again from the key bytes.
// A driver calls it now and then for every circuit, so that a circuit
// idle for a whole period holds only its keys.
func (rc *RelayCircuit) ReleaseIdle() bool {
	mark := rc.hop.forward.counter + rc.hop.backward.counter
	if mark != rc.idleMark {
		rc.idleMark = mark
		return false
	}
	if rc.hop.forward.aead == nil && rc.hop.backward.aead == nil {
		return false
	}
	rc.hop.forward.release()
	rc.hop.backward.release()
	return true
}

// Position is this relay's position in the circuit (1 = guard).
func (rc *RelayCircuit) Position() int { return rc.hop.pos }

// emitBackward seals a message from this hop toward the client.
// The cell is built in place at the end of the caller's ToPrev (no
// scratch cell in the circuit: an idle circuit keeps no cell buffers).
func (rc *RelayCircuit) emitBackward(m RelayMsg) error {
	a := rc.acts
	n := len(a.ToPrev)
	a.ToPrev = append(a.ToPrev, Cell{Cmd: CmdRelay})
	c := &a.ToPrev[n]
	err := EncodeRelayMsg(c.Payload[:BodySize(rc.hop.pos)], m)
	if err == nil {
		err = rc.hop.sealBackward(&c.Payload, FlagLocal)
	}
	if err != nil {
		a.ToPrev = a.ToPrev[:n]
	}
	return err
}

// HandleForward processes a RELAY cell from the previous hop. Any error
// means the circuit must be destroyed in both directions.
func (rc *RelayCircuit) HandleForward(payload *[PayloadSize]byte, a *RelayActions) error {
	rc.acts = a
	flag, err := rc.hop.openForward(payload)
	if err != nil {
		return err
	}
	if flag == FlagForward {
		if !rc.extended || rc.extending {
			return fmt.Errorf("%w: forward cell with no next hop", ErrProtocol)
		}
		a.ToNext = append(a.ToNext, Cell{Cmd: CmdRelay, Payload: *payload})
		return nil
	}
	m, err := DecodeRelayMsg(payload[:BodySize(rc.hop.pos)])
	if err != nil {
		return err
	}
	m, complete, err := rc.frags.add(m, 0)
	if err != nil || !complete {
		return err
	}
	return rc.handleLocal(m)
}

func (rc *RelayCircuit) handleLocal(m RelayMsg) error {
	a := rc.acts
	if rc.extended && m.Cmd != RelayDrop {
		// A middle hop carries no streams and takes no second EXTEND.
		return fmt.Errorf("%w: relay command %d at a middle hop", ErrProtocol, m.Cmd)
	}
	switch m.Cmd {
	case RelayDrop:
		return nil
	case RelayExtend:
		if len(rc.ep.streams) > 0 {
			return fmt.Errorf("%w: EXTEND after BEGIN", ErrProtocol)
		}
		if rc.hop.pos >= MaxHops {
			return fmt.Errorf("%w: circuit too long", ErrProtocol)
		}
		req, err := DecodeExtend(m.Data)
		if err != nil {
			return err
		}
		if (req.HType != HandshakeHybrid && req.HType != HandshakeNK) || len(req.Handshake) == 0 || len(req.Handshake) > MaxHandshakeSize {
			return fmt.Errorf("%w: EXTEND with an unusable handshake", ErrProtocol)
		}
		req.Handshake = append([]byte(nil), req.Handshake...)
		rc.extended, rc.extending = true, true
		a.Extend = req
		return nil
	case RelayBegin:
		host, port, err := DecodeBegin(m.Data)
		if err != nil {
			return err
		}
		if err := rc.ep.addStream(m.StreamID); err != nil {
			if err == ErrTooManyStreams {
				return rc.emitBackward(RelayMsg{Cmd: RelayEnd, StreamID: m.StreamID, Data: []byte{byte(EndResourceLimit)}})
			}
			return err
		}
		a.Begins = append(a.Begins, BeginRequest{StreamID: m.StreamID, Host: host, Port: port})
		return nil
	case RelayResolve:
		return rc.handleResolve(m)
	default:
		if handled, err := rc.ep.handleStreamMsg(m, &a.StreamActions); handled {
			return err
		}
		return fmt.Errorf("%w: relay command %d not for a relay", ErrProtocol, m.Cmd)
	}
}

func endReasonOf(data []byte) EndReason {
	if len(data) == 0 {
		return EndMisc
	}
	return EndReason(data[0])
}

// HandleBackward processes a RELAY cell from the next hop: it adds this
// hop's layer and sends it toward the client.
func (rc *RelayCircuit) HandleBackward(payload *[PayloadSize]byte, a *RelayActions) error {
	rc.acts = a
	if !rc.extended || rc.extending {
		return fmt.Errorf("%w: backward cell with no next hop", ErrProtocol)
	}
	// Seal in the action slot itself: a local Cell would escape to the heap
	// (the AEAD is an interface), and this path must not allocate.
	a.ToPrev = append(a.ToPrev, Cell{Cmd: CmdRelay, Payload: *payload})
	c := &a.ToPrev[len(a.ToPrev)-1]
	if err := rc.hop.sealBackward(&c.Payload, FlagForward); err != nil {
		a.ToPrev = a.ToPrev[:len(a.ToPrev)-1]
		return err
	}
	return nil
}

// HandleCreated processes the next hop's CREATED: the EXTENDED message
// goes back to the client.
func (rc *RelayCircuit) HandleCreated(payload *[PayloadSize]byte, a *RelayActions) error {
	rc.acts = a
	if !rc.extending {
		return fmt.Errorf("%w: unexpected CREATED", ErrProtocol)
	}
	hdata, err := DecodeCreated(payload[:])
	if err != nil {
		return err
	}
	rc.extending = false
	data := make([]byte, 2+len(hdata))
	data[0], data[1] = byte(len(hdata)>>8), byte(len(hdata))
	copy(data[2:], hdata)
	return emitFragmented(rc.emitBackward, RelayMsg{Cmd: RelayExtended, Data: data}, rc.ep.maxData)
}

// StreamConnected tells the client that the exit reached the target at
// addr (the zero Addr sends no address).
func (rc *RelayCircuit) StreamConnected(id uint16, addr netip.Addr, a *RelayActions) error {
	rc.acts = a
	s, ok := rc.ep.streams[id]
	if !ok {
		return nil
	}
	s.open = true
	return rc.emitBackward(RelayMsg{Cmd: RelayConnected, StreamID: id, Data: EncodeConnected(addr)})
}

// StreamEnded tells the client that the exit's side of a stream closed
// (the target hung up, or the connection failed with reason).
func (rc *RelayCircuit) StreamEnded(id uint16, reason EndReason, a *RelayActions) error {
	rc.acts = a
	if _, ok := rc.ep.streams[id]; !ok {
		return nil
	}
	delete(rc.ep.streams, id)
	return rc.emitBackward(RelayMsg{Cmd: RelayEnd, StreamID: id, Data: []byte{byte(reason)}})
}

// CanPackage reports whether stream id may send data now.
func (rc *RelayCircuit) CanPackage(id uint16) bool { return rc.ep.canSend(id) }

// PackageData sends as much of data toward the client as the windows allow
// and returns how many bytes it took.
func (rc *RelayCircuit) PackageData(id uint16, data []byte, a *RelayActions) (int, error) {
	rc.acts = a
	return rc.ep.packageData(id, data)
}

// StreamConsumed reports that the exit wrote n cells of stream id's data to
// the target, which may release an XON.
func (rc *RelayCircuit) StreamConsumed(id uint16, n int, a *RelayActions) error {
	rc.acts = a
	return rc.ep.consumed(id, n)
}

// MaxData is the most stream data one cell from this hop carries.
func (rc *RelayCircuit) MaxData() int { return rc.ep.maxData }
