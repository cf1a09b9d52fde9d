package circuit

import (
	"errors"
	"fmt"
)

// Flow control, in the manner of Tor's fixed windows (tor-spec §7.3–7.4):
// a sender may have at most CircWindowStart DATA cells unacknowledged on a
// circuit and StreamWindowStart on one stream.
//
// The receiver sends a stream-level SENDME every StreamWindowIncrement
// cells its application has consumed, so a slow reader stalls only its own
// stream, and a peer that sends past a stream window is caught and the
// circuit destroyed: what one circuit buffers at its receiver is bounded by
// MaxStreamsPerCircuit × StreamWindowStart cells.
//
// The receiver sends a circuit-level SENDME (StreamID 0) every
// CircWindowIncrement DATA cells it receives, as Tor does. That paces an
// honest sender (it bounds the cells in flight through the relays) but the
// receiver cannot use it to catch a dishonest one, because the sender's
// window refills from SENDMEs the receiver sends anyway; authenticated
// SENDMEs and congestion control replace it (docs/spec/circuit.md).
const (
	CircWindowStart       = 1000
	CircWindowIncrement   = 100
	StreamWindowStart     = 500
	StreamWindowIncrement = 50
	// MaxStreamsPerCircuit bounds the stream table of one circuit.
	MaxStreamsPerCircuit = 256
)

var (
	// ErrWindow is returned when a peer sends beyond a flow-control window.
	ErrWindow = errors.New("circuit: flow-control window exceeded")
	// ErrUnknownStream is returned for messages about streams that do not exist.
	ErrUnknownStream = errors.New("circuit: unknown stream")
	// ErrTooManyStreams is returned when a circuit's stream table is full.
	ErrTooManyStreams = errors.New("circuit: too many streams")
	// ErrProtocol is returned for messages that are well formed but not
	// allowed in the circuit's state.
	ErrProtocol = errors.New("circuit: protocol violation")
)

type streamFlow struct {
	pkg      int // DATA cells we may still send
	deliver  int // DATA cells the peer may still send
	consumed int // cells the application consumed since the last SENDME
	open     bool
}

// endpoint holds the streams and windows at one end of a circuit: the
// client, or the hop the client's streams exit from.
type endpoint struct {
	circPkg     int
	circDeliver int
	streams     map[uint16]*streamFlow
	maxData     int
	emit        func(RelayMsg) error // seals one message toward the peer
}

func newEndpoint(maxData int, emit func(RelayMsg) error) endpoint {
	return endpoint{
		circPkg:     CircWindowStart,
		circDeliver: CircWindowStart,
		streams:     make(map[uint16]*streamFlow),
		maxData:     maxData,
		emit:        emit,
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
	e.streams[id] = &streamFlow{pkg: StreamWindowStart, deliver: StreamWindowStart}
	return nil
}

// onData accounts for one received DATA cell. It returns ErrWindow if the
// peer overran a window and emits a circuit SENDME when one is due.
func (e *endpoint) onData(id uint16) error {
	s, ok := e.streams[id]
	if !ok {
		// Data may race with our END; count it against the circuit only.
		return e.chargeCircuit()
	}
	if !s.open {
		return fmt.Errorf("%w: DATA before CONNECTED", ErrProtocol)
	}
	if s.deliver <= 0 {
		return ErrWindow
	}
	s.deliver--
	return e.chargeCircuit()
}

func (e *endpoint) chargeCircuit() error {
	if e.circDeliver <= 0 {
		return ErrWindow
	}
	e.circDeliver--
	if e.circDeliver <= CircWindowStart-CircWindowIncrement {
		e.circDeliver += CircWindowIncrement
		return e.emit(RelayMsg{Cmd: RelaySendme})
	}
	return nil
}

// consumed records that the application took n cells of stream id and
// sends stream SENDMEs as they fall due.
func (e *endpoint) consumed(id uint16, n int) error {
	s, ok := e.streams[id]
	if !ok {
		return nil
	}
	s.consumed += n
	for s.consumed >= StreamWindowIncrement {
		s.consumed -= StreamWindowIncrement
		if s.deliver+StreamWindowIncrement > StreamWindowStart {
			return fmt.Errorf("%w: consumed more than received", ErrProtocol)
		}
		s.deliver += StreamWindowIncrement
		if err := e.emit(RelayMsg{Cmd: RelaySendme, StreamID: id}); err != nil {
			return err
		}
	}
	return nil
}

// onSendme applies a SENDME. It reports whether sending may resume.
func (e *endpoint) onSendme(id uint16) (bool, error) {
	if id == 0 {
		if e.circPkg+CircWindowIncrement > CircWindowStart {
			return false, ErrWindow
		}
		e.circPkg += CircWindowIncrement
		return true, nil
	}
	s, ok := e.streams[id]
	if !ok {
		return false, nil
	}
	if s.pkg+StreamWindowIncrement > StreamWindowStart {
		return false, ErrWindow
	}
	s.pkg += StreamWindowIncrement
	return true, nil
}

// canSend reports whether stream id may send a DATA cell now.
func (e *endpoint) canSend(id uint16) bool {
	s, ok := e.streams[id]
	return ok && s.open && s.pkg > 0 && e.circPkg > 0
}

// packageData emits as many DATA cells for stream id as the windows allow
// and returns how many bytes of data they carry.
func (e *endpoint) packageData(id uint16, data []byte) (int, error) {
	s, ok := e.streams[id]
	if !ok || !s.open {
		return 0, ErrUnknownStream
	}
	sent := 0
	for sent < len(data) && s.pkg > 0 && e.circPkg > 0 {
		n := min(len(data)-sent, e.maxData)
		if err := e.emit(RelayMsg{Cmd: RelayData, StreamID: id, Data: data[sent : sent+n]}); err != nil {
			return sent, err
		}
		s.pkg--
		e.circPkg--
		sent += n
	}
	return sent, nil
}

// endStream forgets stream id.
func (e *endpoint) endStream(id uint16) { delete(e.streams, id) }
