package circuit

import (
	"encoding/binary"
	"fmt"
)

// Fragmentation. A hybrid handshake's first message (1145 bytes) is larger
// than a cell, so it travels in pieces, reassembled with strict limits.
//
// CREATE: the first CREATE cell of a circuit carries
//
//	HType (2) | HLen (2) | the first min(HLen, 505) bytes | zeros
//
// and, while fewer than HLen bytes have arrived, every further cell on that
// circuit ID must be CREATE and carries the next min(remaining, 509) bytes
// (then zeros). HLen is 1..MaxHandshakeSize. Any other cell for the circuit
// before the message is complete is a protocol error.
//
// Relay messages: a message whose data exceeds one cell is sent as
// consecutive fragments with the MORE bit (0x80) set in the command byte of
// every fragment but the last; each carries the same command and stream ID.
// Only EXTEND and EXTENDED may be fragmented, the reassembled data is at
// most MaxFragmentedSize bytes, and no other message may come between the
// fragments.

// Fragmentation limits.
const (
	MaxHandshakeSize  = maxHandshakeMessageSize
	MaxFragmentedSize = 4096
	createHeaderSize  = 4
)

// RelayMore marks a relay message fragment that has more to follow.
const RelayMore RelayCmd = 0x80

// CreatePayloads returns the CREATE cell payloads carrying one handshake
// message.
func CreatePayloads(ht HandshakeType, hdata []byte) ([][PayloadSize]byte, error) {
	if len(hdata) == 0 || len(hdata) > MaxHandshakeSize {
		return nil, ErrBadCell
	}
	var out [][PayloadSize]byte
	var p [PayloadSize]byte
	binary.BigEndian.PutUint16(p[0:2], uint16(ht))
	binary.BigEndian.PutUint16(p[2:4], uint16(len(hdata)))
	n := copy(p[createHeaderSize:], hdata)
	out = append(out, p)
	for rest := hdata[n:]; len(rest) > 0; {
		var q [PayloadSize]byte
		m := copy(q[:], rest)
		rest = rest[m:]
		out = append(out, q)
	}
	return out, nil
}

// CreateAssembler collects the CREATE cells of one circuit.
type CreateAssembler struct {
	ht    HandshakeType
	total int
	buf   []byte
}

// StartCreate parses a circuit's first CREATE payload. done reports whether
// the handshake message is complete.
func StartCreate(payload *[PayloadSize]byte) (a *CreateAssembler, done bool, err error) {
	ht := HandshakeType(binary.BigEndian.Uint16(payload[0:2]))
	total := int(binary.BigEndian.Uint16(payload[2:4]))
	if total == 0 || total > MaxHandshakeSize {
		return nil, false, fmt.Errorf("%w: handshake length %d", ErrBadCell, total)
	}
	a = &CreateAssembler{ht: ht, total: total, buf: make([]byte, 0, total)}
	n := min(total, PayloadSize-createHeaderSize)
	a.buf = append(a.buf, payload[createHeaderSize:createHeaderSize+n]...)
	return a, len(a.buf) == total, nil
}

// Add appends a continuation CREATE payload.
func (a *CreateAssembler) Add(payload *[PayloadSize]byte) (done bool, err error) {
	if len(a.buf) >= a.total {
		return true, fmt.Errorf("%w: CREATE after a complete handshake", ErrProtocol)
	}
	n := min(a.total-len(a.buf), PayloadSize)
	a.buf = append(a.buf, payload[:n]...)
	return len(a.buf) == a.total, nil
}

// Message returns the reassembled handshake type and message.
func (a *CreateAssembler) Message() (HandshakeType, []byte) { return a.ht, a.buf }

// msgAssembler reassembles one direction's fragmented relay messages.
type msgAssembler struct {
	pending bool
	from    int // the hop the fragments come from (client side)
	cmd     RelayCmd
	stream  uint16
	buf     []byte
}

func fragmentable(cmd RelayCmd) bool { return cmd == RelayExtend || cmd == RelayExtended }

// add takes one decoded message. It returns the complete message (Data
// owned by the assembler until the next call) and true when one is ready.
func (f *msgAssembler) add(m RelayMsg, from int) (RelayMsg, bool, error) {
	if !m.More && !f.pending {
		return m, true, nil
	}
	if !fragmentable(m.Cmd) {
		return RelayMsg{}, false, fmt.Errorf("%w: fragment of relay command %d", ErrProtocol, m.Cmd)
	}
	if f.pending && (m.Cmd != f.cmd || m.StreamID != f.stream || from != f.from) {
		return RelayMsg{}, false, fmt.Errorf("%w: message interleaved with fragments", ErrProtocol)
	}
	if !f.pending {
		f.pending, f.cmd, f.stream, f.from, f.buf = true, m.Cmd, m.StreamID, from, f.buf[:0]
	}
	if len(f.buf)+len(m.Data) > MaxFragmentedSize {
		return RelayMsg{}, false, fmt.Errorf("%w: fragmented message too long", ErrProtocol)
	}
	f.buf = append(f.buf, m.Data...)
	if m.More {
		return RelayMsg{}, false, nil
	}
	f.pending = false
	return RelayMsg{Cmd: f.cmd, StreamID: f.stream, Data: f.buf}, true, nil
}

// emitFragmented sends m through emit, split into fragments of at most
// maxData bytes when it does not fit one cell.
func emitFragmented(emit func(RelayMsg) error, m RelayMsg, maxData int) error {
	if len(m.Data) <= maxData {
		return emit(m)
	}
	if !fragmentable(m.Cmd) || len(m.Data) > MaxFragmentedSize {
		return ErrBadRelayMsg
	}
	for data := m.Data; len(data) > 0; {
		n := min(len(data), maxData)
		frag := RelayMsg{Cmd: m.Cmd, StreamID: m.StreamID, Data: data[:n], More: n < len(data)}
		if err := emit(frag); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// CreateContinuations is how many continuation CREATE cells follow a first
// CREATE payload, by its HLen (clamped to MaxHandshakeSize). A relay that
// refuses a first CREATE uses it to drop the rest of the message instead
// of reading its continuations as new CREATEs.
func CreateContinuations(first *[PayloadSize]byte) int {
	total := min(int(binary.BigEndian.Uint16(first[2:4])), MaxHandshakeSize)
	rest := total - (PayloadSize - createHeaderSize)
	if rest <= 0 {
		return 0
	}
	return (rest + PayloadSize - 1) / PayloadSize
}
