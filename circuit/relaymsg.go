package circuit

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"unicode/utf8"
)

// Relay messages are the plaintext a hop finds in its layer when the flag
// says FlagLocal. They fill the hop's body (BodySize(p) bytes):
//
//	+-------+-------------+-----------+--------------+---------------+
//	| Cmd 1 | StreamID 2  | Length 2  | Data Length  | zero padding  |
//	+-------+-------------+-----------+--------------+---------------+
//
// StreamID 0 means the message concerns the circuit itself.

// RelayCmd is a relay message's command.
type RelayCmd byte

// Relay commands.
const (
	RelayBegin     RelayCmd = 1  // open a stream to host:port (client to exit)
	RelayData      RelayCmd = 2  // stream bytes
	RelayEnd       RelayCmd = 3  // close a stream; Data[0] is an EndReason
	RelayConnected RelayCmd = 4  // the exit reached the target
	RelaySendme    RelayCmd = 5  // flow-control acknowledgement
	RelayExtend    RelayCmd = 6  // extend the circuit by one hop (client to last hop)
	RelayExtended  RelayCmd = 7  // the extension succeeded; carries handshake msg2
	RelayDrop      RelayCmd = 8  // padding; ignored
	RelayXoff      RelayCmd = 9  // stop sending on this stream
	RelayXon       RelayCmd = 10 // resume sending on this stream
	RelayResolve   RelayCmd = 11 // resolve a host name at the exit (client to exit)
	RelayResolved  RelayCmd = 12 // the answer to RESOLVE
	RelayFin       RelayCmd = 13 // the sender will send no more data on this stream (half-close)
	maxRelayCmd             = RelayFin
)

// RelayHeaderSize is the size of a relay message header.
const RelayHeaderSize = 1 + 2 + 2

// MaxDataSize is the most stream data one cell carries to hop p.
func MaxDataSize(p int) int { return BodySize(p) - RelayHeaderSize }

// EndReason says why a stream ended.
type EndReason byte

// End reasons.
const (
	EndMisc           EndReason = 1
	EndResolveFailed  EndReason = 2 // the exit could not resolve the host name
	EndConnectRefused EndReason = 3 // the target refused the connection
	EndExitPolicy     EndReason = 4 // the exit policy forbids the target
	EndDestroy        EndReason = 5 // the circuit is going away
	EndDone           EndReason = 6 // normal close
	EndTimeout        EndReason = 7 // connecting to the target timed out
	EndNoRoute        EndReason = 8 // the target is unreachable
	EndResourceLimit  EndReason = 9 // the exit is out of streams or memory
	EndProtocol       EndReason = 10
)

// ErrBadRelayMsg is returned for relay messages that do not parse.
var ErrBadRelayMsg = errors.New("circuit: malformed relay message")

// RelayMsg is a decoded relay message. Data aliases the buffer it was
// decoded from.
type RelayMsg struct {
	Cmd      RelayCmd
	StreamID uint16
	Data     []byte
	More     bool // a fragment with more to follow (fragment.go)
	// Pad, if set, is written at the very end of the body instead of
	// zeros; receivers ignore padding. Flow control uses it to make the
	// tag of a SENDME-triggering cell unpredictable (flow.go).
	Pad []byte
}

// EncodeRelayMsg writes m into body (a hop's whole body), zero-padding the
// rest.
func EncodeRelayMsg(body []byte, m RelayMsg) error {
	if len(m.Data)+len(m.Pad) > len(body)-RelayHeaderSize {
		return ErrBadRelayMsg
	}
	body[0] = byte(m.Cmd)
	if m.More {
		body[0] |= byte(RelayMore)
	}
	binary.BigEndian.PutUint16(body[1:3], m.StreamID)
	binary.BigEndian.PutUint16(body[3:5], uint16(len(m.Data)))
	n := copy(body[RelayHeaderSize:], m.Data)
	clear(body[RelayHeaderSize+n:])
	copy(body[len(body)-len(m.Pad):], m.Pad)
	return nil
}

// DecodeRelayMsg parses a hop's body.
func DecodeRelayMsg(body []byte) (RelayMsg, error) {
	if len(body) < RelayHeaderSize {
		return RelayMsg{}, ErrBadRelayMsg
	}
	m := RelayMsg{Cmd: RelayCmd(body[0]) &^ RelayMore, StreamID: binary.BigEndian.Uint16(body[1:3]), More: body[0]&byte(RelayMore) != 0}
	n := int(binary.BigEndian.Uint16(body[3:5]))
	if m.Cmd < RelayBegin || m.Cmd > maxRelayCmd || n > len(body)-RelayHeaderSize {
		return RelayMsg{}, ErrBadRelayMsg
	}
	m.Data = body[RelayHeaderSize : RelayHeaderSize+n]
	return m, nil
}

// BEGIN data: Port (2) | HostLen (1) | Host (HostLen bytes). Host is a DNS
// name or an IP literal exactly as the application gave it; the exit
// resolves it, never the client.

// MaxHostLen bounds BEGIN host names (DNS names are at most 253 bytes).
const MaxHostLen = 255

// EncodeBegin returns BEGIN data for host:port.
func EncodeBegin(host string, port uint16) ([]byte, error) {
	if !validHost(host) || port == 0 {
		return nil, ErrBadRelayMsg
	}
	b := make([]byte, 3, 3+len(host))
	binary.BigEndian.PutUint16(b, port)
	b[2] = byte(len(host))
	return append(b, host...), nil
}

// DecodeBegin parses BEGIN data.
func DecodeBegin(data []byte) (host string, port uint16, err error) {
	if len(data) < 3 {
		return "", 0, ErrBadRelayMsg
	}
	port = binary.BigEndian.Uint16(data)
	n := int(data[2])
	if len(data) != 3+n {
		return "", 0, ErrBadRelayMsg
	}
	host = string(data[3:])
	if !validHost(host) || port == 0 {
		return "", 0, ErrBadRelayMsg
	}
	return host, port, nil
}

// validHost accepts 1..255 printable ASCII bytes without spaces: enough for
// DNS names and IP literals (IPv6 without brackets), and nothing a resolver
// or a log could misread.
func validHost(h string) bool {
	if len(h) == 0 || len(h) > MaxHostLen || !utf8.ValidString(h) {
		return false
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= ' ' || h[i] >= 0x7f {
			return false
		}
	}
	return true
}

// ExtendRequest is what EXTEND carries: who the next hop is and the
// client's first handshake message for it.
//
//	Identity (32) | LinkKey (32) | AddrType (1: 4 or 6) | Addr (4 or 16) |
//	Port (2) | HandshakeType (2) | HLen (2) | HData (HLen)
type ExtendRequest struct {
	Identity  [32]byte
	LinkKey   [32]byte
	Addr      netip.AddrPort
	HType     HandshakeType
	Handshake []byte
}

// Encode returns the EXTEND data.
func (e *ExtendRequest) Encode() ([]byte, error) {
	a := e.Addr.Addr().Unmap()
	if !a.IsValid() || e.Addr.Port() == 0 || len(e.Handshake) > 0xffff {
		return nil, ErrBadRelayMsg
	}
	b := make([]byte, 0, 64+1+16+6+len(e.Handshake))
	b = append(b, e.Identity[:]...)
	b = append(b, e.LinkKey[:]...)
	if a.Is4() {
		b = append(b, 4)
	} else {
		b = append(b, 6)
	}
	b = append(b, a.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, e.Addr.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(e.HType))
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Handshake)))
	return append(b, e.Handshake...), nil
}

// DecodeExtend parses EXTEND data. Handshake aliases data.
func DecodeExtend(data []byte) (*ExtendRequest, error) {
	var e ExtendRequest
	if len(data) < 65 {
		return nil, ErrBadRelayMsg
	}
	copy(e.Identity[:], data[0:32])
	copy(e.LinkKey[:], data[32:64])
	rest := data[65:]
	var addr netip.Addr
	switch data[64] {
	case 4:
		if len(rest) < 4 {
			return nil, ErrBadRelayMsg
		}
		addr = netip.AddrFrom4([4]byte(rest[:4]))
		rest = rest[4:]
	case 6:
		if len(rest) < 16 {
			return nil, ErrBadRelayMsg
		}
		addr = netip.AddrFrom16([16]byte(rest[:16]))
		if addr.Is4In6() {
			return nil, ErrBadRelayMsg // one encoding per address: IPv4 uses type 4
		}
		rest = rest[16:]
	default:
		return nil, ErrBadRelayMsg
	}
	if len(rest) < 6 {
		return nil, ErrBadRelayMsg
	}
	port := binary.BigEndian.Uint16(rest[0:2])
	e.HType = HandshakeType(binary.BigEndian.Uint16(rest[2:4]))
	n := int(binary.BigEndian.Uint16(rest[4:6]))
	if port == 0 || len(rest) != 6+n {
		return nil, ErrBadRelayMsg
	}
	e.Addr = netip.AddrPortFrom(addr, port)
	e.Handshake = rest[6:]
	return &e, nil
}

// CREATE payloads (possibly several cells) are built by CreatePayloads and
// read by CreateAssembler (fragment.go).
// CREATED payload and EXTENDED data: HLen (2) | HData (| zeros).

// EncodeCreated fills a CREATED cell's payload.
func EncodeCreated(payload *[PayloadSize]byte, hdata []byte) error {
	if len(hdata) > PayloadSize-2 {
		return ErrBadCell
	}
	binary.BigEndian.PutUint16(payload[0:2], uint16(len(hdata)))
	n := copy(payload[2:], hdata)
	clear(payload[2+n:])
	return nil
}

// DecodeCreated parses a CREATED payload or EXTENDED data.
func DecodeCreated(data []byte) ([]byte, error) {
	if len(data) < 2 {
		return nil, ErrBadCell
	}
	n := int(binary.BigEndian.Uint16(data[0:2]))
	if n > len(data)-2 {
		return nil, ErrBadCell
	}
	return data[2 : 2+n], nil
}
