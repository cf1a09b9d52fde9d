package circuit

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// Flow and congestion control (docs/spec/circuit.md §6).
//
// Circuit level: the sender of DATA keeps a congestion window (cwnd, in
// cells) and may have at most cwnd DATA cells unacknowledged. The receiver
// sends a circuit SENDME (StreamID 0) for every SendmeInc DATA cells it
// receives, carrying the 16-byte layer tag of the cell that completed the
// count. Only a receiver that really decrypted that cell knows its tag, so
// a SENDME proves receipt (in the spirit of Tor's proposal 289) and a client
// cannot make an exit send faster than the data arrives. The sender
// measures the round trip of each acknowledged cell and adjusts cwnd the
// way TCP Vegas and Tor's proposal 324 do: grow while the estimated queue
// the circuit builds along its path is small, shrink when it grows.
//
// Stream level: no window limits a stream's throughput. A receiver whose
// application falls behind by XoffCells cells on one stream sends XOFF; the
// sender stops that stream until XON, which the receiver sends once the
// backlog falls to XonCells (Tor's proposal 344). A slow reader therefore
// stalls only its own stream. A sender that keeps sending on a stream after
// XOFF, beyond what could have been in flight (MaxCwnd), is caught and the
// circuit destroyed: a receiver buffers at most XoffCells+MaxCwnd cells per
// stream.

// Flow-control constants, in cells.
const (
	SendmeInc = 31
	CwndInit  = 124
	CwndMin   = 124
	MaxCwnd   = 4096
	// Vegas thresholds on the estimated queue (cells) a circuit keeps in
	// the network: grow below Alpha, shrink above Beta, leave slow start
	// above Gamma, cut back hard above Delta. Tor uses 3, 4, 3 and 5 TLS
	// output buffers (62 cells), the queue each hop holds while batching;
	// our hops batch by link frame, so the same multiples of a frame
	// (spec §6.4).
	VegasAlpha = 3 * MaxCellsPerFrame
	VegasBeta  = 4 * MaxCellsPerFrame
	VegasGamma = 3 * MaxCellsPerFrame
	VegasDelta = 5 * MaxCellsPerFrame

	XoffCells = 256
	XonCells  = 64
	// MaxStreamsPerCircuit bounds the stream table of one circuit.
	MaxStreamsPerCircuit = 256
	// maxPendingAcks bounds the sender's record of cells awaiting SENDMEs.
	maxPendingAcks = MaxCwnd/SendmeInc + 1
	// sendmePadSize is the random padding in each SENDME-triggering cell.
	sendmePadSize = 16
)

var (
	// ErrWindow is returned when a peer sends beyond what flow control
	// allows.
	ErrWindow = errors.New("circuit: flow-control limit exceeded")
	// ErrUnknownStream is returned for messages about streams that do not exist.
	ErrUnknownStream = errors.New("circuit: unknown stream")
	// ErrTooManyStreams is returned when a circuit's stream table is full.
	ErrTooManyStreams = errors.New("circuit: too many streams")
	// ErrProtocol is returned for messages that are well formed but not
	// allowed in the circuit's state.
	ErrProtocol = errors.New("circuit: protocol violation")
)

// StreamActions are the stream events a call produced; both
// ClientActions and RelayActions embed them.
type StreamActions struct {
	Data     []StreamData // bytes for streams, in order
	Finished []uint16     // streams on which the peer will send no more (FIN)
	Ends     []StreamEnd  // streams the peer closed
	Writable []uint16     // streams that may send again (0: every stream)
	// dataBuf holds the bytes of Data: one buffer reused from reset to
	// reset, so that delivering a cell's data allocates nothing.
	dataBuf []byte
}

func (a *StreamActions) reset() {
	a.Data, a.Finished, a.Ends, a.Writable = a.Data[:0], a.Finished[:0], a.Ends[:0], a.Writable[:0]
	a.dataBuf = a.dataBuf[:0]
}

// empty reports whether a holds no stream event.
func (a *StreamActions) empty() bool {
	return len(a.Data) == 0 && len(a.Finished) == 0 && len(a.Ends) == 0 && len(a.Writable) == 0
}

// addData appends a copy of b for stream id to Data.
func (a *StreamActions) addData(id uint16, b []byte) {
	start := len(a.dataBuf)
	a.dataBuf = append(a.dataBuf, b...)
	end := len(a.dataBuf)
	a.Data = append(a.Data, StreamData{StreamID: id, Data: a.dataBuf[start:end:end]})
}

type streamFlow struct {
	open     bool
	blocked  bool // the peer sent XOFF
	buffered int  // cells received and not yet consumed
	xoffSent bool
	sentFin  bool       // we half-closed
	recvFin  bool       // the peer half-closed
	addr     netip.Addr // the address the exit connected to (client side)
}

type pendingAck struct {
	tag  [TagSize]byte
	sent time.Time
}

// endpoint holds the streams and flow control at one end of a circuit: the
// client, or the hop the client's streams exit from.
type endpoint struct {
	streams map[uint16]*streamFlow
	maxData int
	emit    func(RelayMsg) error // seals one message toward the peer
	now     func() time.Time
	sendKey *layerKey // our layer key for what we send: its last tag
	recvKey *layerKey // the layer key for what we receive: its last tag
	rand    io.Reader
	pad     [sendmePadSize]byte

	// Congestion control of what we send.
	cwnd      int
	inflight  int
	sent      uint64
	acks      []pendingAck
	slowStart bool
	minRTT    time.Duration
	// fixedCwnd, if nonzero, pins cwnd (no Vegas updates): for experiments
	// that compare congestion control with Tor's old fixed window.
	fixedCwnd        int
	ackedSinceUpdate int

	// Acknowledgement of what we receive.
	received uint64
}

func newEndpoint(maxData int, emit func(RelayMsg) error, now func() time.Time, rand io.Reader, sendKey, recvKey *layerKey) endpoint {
	return endpoint{
		maxData: maxData, emit: emit, now: now, rand: rand,
		sendKey: sendKey, recvKey: recvKey,
		cwnd: CwndInit, slowStart: true,
	}
}

func (e *endpoint) addStream(id uint16) error {
	if id == 0 {
		return fmt.Errorf("%w: stream 0", ErrProtocol)
	}
	if _, ok := e.streams[id]; ok {
		return fmt.Errorf("%w: duplicate stream", ErrProtocol)
	}
	if len(e.streams) >= MaxStreamsPerCircuit {
		return ErrTooManyStreams
	}
	if e.streams == nil { // made on first use: most circuits through a relay carry no streams there
		e.streams = make(map[uint16]*streamFlow)
	}
	e.streams[id] = &streamFlow{}
	return nil
}

// handleStreamMsg handles the messages both ends treat alike: DATA, END,
// SENDME, XON and XOFF. handled is false for any other command.
func (e *endpoint) handleStreamMsg(m RelayMsg, a *StreamActions) (handled bool, err error) {
	switch m.Cmd {
	case RelayData:
		if m.StreamID == 0 {
			return true, fmt.Errorf("%w: DATA on stream 0", ErrProtocol)
		}
		deliver, err := e.onData(m.StreamID)
		if err == nil && deliver {
			a.addData(m.StreamID, m.Data)
		}
		return true, err
	case RelayEnd:
		if _, ok := e.streams[m.StreamID]; ok {
			delete(e.streams, m.StreamID)
			a.Ends = append(a.Ends, StreamEnd{StreamID: m.StreamID, Reason: endReasonOf(m.Data)})
		}
		return true, nil
	case RelaySendme:
		if err := e.onSendme(m); err != nil {
			return true, err
		}
		a.Writable = append(a.Writable, 0)
		return true, nil
	case RelayFin:
		s, ok := e.streams[m.StreamID]
		if !ok {
			return true, nil
		}
		if s.recvFin || !s.open || len(m.Data) != 0 {
			return true, fmt.Errorf("%w: unexpected FIN", ErrProtocol)
		}
		s.recvFin = true
		a.Finished = append(a.Finished, m.StreamID)
		if s.sentFin {
			delete(e.streams, m.StreamID)
		}
		return true, nil
	case RelayXoff, RelayXon:
		s, ok := e.streams[m.StreamID]
		if m.StreamID == 0 || len(m.Data) != 0 {
			return true, fmt.Errorf("%w: malformed XON/XOFF", ErrProtocol)
		}
		if ok {
			s.blocked = m.Cmd == RelayXoff
			if !s.blocked {
				a.Writable = append(a.Writable, m.StreamID)
			}
		}
		return true, nil
	}
	return false, nil
}

// onData accounts for one received DATA cell: it reports whether to
// deliver it, sends the circuit SENDME when one is due, and XOFF when the
// stream's backlog reaches XoffCells.
func (e *endpoint) onData(id uint16) (deliver bool, err error) {
	e.received++
	if e.received%SendmeInc == 0 {
		// Tag of the cell just opened: proof that we received it.
		tag := e.recvKey.tag
		if err := e.emit(RelayMsg{Cmd: RelaySendme, Data: tag[:]}); err != nil {
			return false, err
		}
	}
	s, ok := e.streams[id]
	if !ok {
		return false, nil // data racing our END: acknowledged, dropped
	}
	if !s.open || s.recvFin {
		return false, fmt.Errorf("%w: DATA before CONNECTED or after FIN", ErrProtocol)
	}
	s.buffered++
	if s.buffered > XoffCells+MaxCwnd {
		return false, ErrWindow
	}
	if s.buffered >= XoffCells && !s.xoffSent {
		s.xoffSent = true
		if err := e.emit(RelayMsg{Cmd: RelayXoff, StreamID: id}); err != nil {
			return false, err
		}
	}
	return true, nil
}

// consumed records that the application took n cells of stream id, and
// sends XON once a stopped stream's backlog is down to XonCells.
func (e *endpoint) consumed(id uint16, n int) error {
	s, ok := e.streams[id]
	if !ok {
		return nil
	}
	if n > s.buffered {
		return fmt.Errorf("%w: consumed more than received", ErrProtocol)
	}
	s.buffered -= n
	if s.xoffSent && s.buffered <= XonCells {
		s.xoffSent = false
		return e.emit(RelayMsg{Cmd: RelayXon, StreamID: id})
	}
	return nil
}

// onSendme checks a circuit SENDME against the tag of the cell it must
// acknowledge and updates the congestion window.
func (e *endpoint) onSendme(m RelayMsg) error {
	if m.StreamID != 0 || len(m.Data) != TagSize {
		return fmt.Errorf("%w: malformed SENDME", ErrProtocol)
	}
	if len(e.acks) == 0 {
		return fmt.Errorf("%w: SENDME for cells never sent", ErrWindow)
	}
	want := e.acks[0]
	if subtle.ConstantTimeCompare(want.tag[:], m.Data) != 1 {
		return fmt.Errorf("%w: SENDME does not prove receipt", ErrProtocol)
	}
	copy(e.acks, e.acks[1:])
	e.acks = e.acks[:len(e.acks)-1]
	e.inflight -= SendmeInc
	if e.fixedCwnd == 0 {
		e.onRTT(e.now().Sub(want.sent))
	}
	return nil
}

// onRTT runs the Vegas update for one acknowledgement.
func (e *endpoint) onRTT(rtt time.Duration) {
	if rtt <= 0 {
		rtt = time.Microsecond
	}
	if e.minRTT == 0 || rtt < e.minRTT {
		e.minRTT = rtt
	}
	// Cells the path holds without queueing, and the queue beyond that.
	bdp := int(int64(e.cwnd) * int64(e.minRTT) / int64(rtt))
	queue := e.cwnd - bdp
	if e.slowStart {
		if queue > VegasGamma {
			e.slowStart = false
			e.cwnd = bdp + VegasGamma
		} else {
			e.cwnd += SendmeInc // one SENDME per SendmeInc cells: doubling per round trip
		}
	} else {
		e.ackedSinceUpdate += SendmeInc
		if e.ackedSinceUpdate >= e.cwnd { // once per round trip
			e.ackedSinceUpdate = 0
			switch {
			case queue > VegasDelta:
				e.cwnd = bdp + VegasDelta - SendmeInc
			case queue > VegasBeta:
				e.cwnd -= SendmeInc
			case queue < VegasAlpha:
				e.cwnd += SendmeInc
			}
		}
	}
	e.cwnd = max(CwndMin, min(MaxCwnd, e.cwnd))
}

// canSend reports whether stream id may send a DATA cell now.
func (e *endpoint) canSend(id uint16) bool {
	s, ok := e.streams[id]
	return ok && s.open && !s.blocked && !s.sentFin && e.inflight < e.cwnd
}

// finish half-closes stream id: we send no more data on it. The stream is
// forgotten once both sides have finished.
func (e *endpoint) finish(id uint16) error {
	s, ok := e.streams[id]
	if !ok || s.sentFin || !s.open {
		return nil
	}
	s.sentFin = true
	if s.recvFin {
		delete(e.streams, id)
	}
	return e.emit(RelayMsg{Cmd: RelayFin, StreamID: id})
}

// packageData emits as many DATA cells for stream id as flow control
// allows and returns how many bytes of data they carry.
func (e *endpoint) packageData(id uint16, data []byte) (int, error) {
	s, ok := e.streams[id]
	if !ok || !s.open || s.sentFin {
		return 0, ErrUnknownStream
	}
	sent := 0
	for sent < len(data) && !s.blocked && e.inflight < e.cwnd {
		n := min(len(data)-sent, e.maxData)
		var pad []byte
		if (e.sent+1)%SendmeInc == 0 {
			// This cell's tag will be the proof in the SENDME that
			// acknowledges it. The receiver holds the layer key, so were
			// the whole body predictable (a known file, zero padding) it
			// could compute the tag without receiving the cell: random
			// bytes in the padding make that impossible.
			n = min(n, e.maxData-sendmePadSize)
			if _, err := io.ReadFull(e.rand, e.pad[:]); err != nil {
				return sent, err
			}
			pad = e.pad[:]
		}
		if err := e.emit(RelayMsg{Cmd: RelayData, StreamID: id, Data: data[sent : sent+n], Pad: pad}); err != nil {
			return sent, err
		}
		e.inflight++
		e.sent++
		if e.sent%SendmeInc == 0 {
			if len(e.acks) >= maxPendingAcks {
				return sent, fmt.Errorf("%w: too many unacknowledged cells", ErrProtocol)
			}
			e.acks = append(e.acks, pendingAck{tag: e.sendKey.tag, sent: e.now()})
		}
		sent += n
	}
	return sent, nil
}

// Cwnd is the congestion window of what this relay sends, in cells.
func (rc *RelayCircuit) Cwnd() int { return rc.ep.cwnd }

// Cwnd is the congestion window of what the client sends, in cells.
func (c *ClientCircuit) Cwnd() int { return c.ep.cwnd }
