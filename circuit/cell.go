// Package circuit is veil's protocol core: cells, relay messages, the
// circuit handshake, layered cell crypto, the link handshake and framing,
// and the per-circuit state machines of the client and of a relay.
//
// It is sans-IO: it never imports net, never starts a goroutine, never
// sleeps and never reads the clock. Drivers (package relay, package client,
// and the simulator) feed it events and carry out the actions it returns.
//
// Every cell on every link has the same size:
//
//	+----------+---------+------------------------------+
//	| CircID 4 | Cmd 1   | Payload 509                  |
//	+----------+---------+------------------------------+
//	 CellSize = HeaderSize + PayloadSize = 5 + 509 = 514
//
// The byte-level specification is docs/spec/.
package circuit

import (
	"encoding/binary"
	"errors"
)

// Cell sizes.
const (
	HeaderSize  = 4 + 1
	PayloadSize = 509
	CellSize    = HeaderSize + PayloadSize
)

// Command is a cell's command byte.
type Command byte

// Cell commands.
const (
	CmdPadding Command = 0 // link padding; ignored by the receiver
	CmdCreate  Command = 1 // open a circuit: carries the first handshake message
	CmdCreated Command = 2 // answer to CREATE: the second handshake message
	CmdRelay   Command = 3 // layered-encrypted payload travelling along a circuit
	CmdDestroy Command = 4 // tear the circuit down
)

// ErrBadCell is returned for cells that do not parse.
var ErrBadCell = errors.New("circuit: malformed cell")

// Cell is one fixed-size cell. It is a plain value: copying it copies the
// payload.
type Cell struct {
	CircID  uint32
	Cmd     Command
	Payload [PayloadSize]byte
}

// Encode writes the cell into dst, which must be CellSize bytes long.
func (c *Cell) Encode(dst []byte) {
	_ = dst[CellSize-1]
	binary.BigEndian.PutUint32(dst[0:4], c.CircID)
	dst[4] = byte(c.Cmd)
	copy(dst[HeaderSize:CellSize], c.Payload[:])
}

// DecodeCell parses exactly CellSize bytes.
func DecodeCell(src []byte, c *Cell) error {
	if len(src) != CellSize {
		return ErrBadCell
	}
	c.CircID = binary.BigEndian.Uint32(src[0:4])
	c.Cmd = Command(src[4])
	copy(c.Payload[:], src[HeaderSize:])
	if c.Cmd > CmdDestroy {
		return ErrBadCell
	}
	if (c.CircID == 0) != (c.Cmd == CmdPadding) {
		return ErrBadCell
	}
	return nil
}

// CircIDHighBit is set in every circuit ID chosen by the side that opened
// the link and clear in every ID chosen by the side that accepted it, so the
// two ends never pick the same ID.
const CircIDHighBit = 1 << 31

// DestroyReason says why a circuit was torn down. Only the reason byte
// travels; details stay in the local debug log.
type DestroyReason byte

// Destroy reasons.
const (
	DestroyNone          DestroyReason = 0
	DestroyProtocol      DestroyReason = 1 // malformed or unauthenticated cell
	DestroyInternal      DestroyReason = 2
	DestroyRequested     DestroyReason = 3 // the client closed the circuit
	DestroyConnectFailed DestroyReason = 4 // could not reach the next hop
	DestroyResourceLimit DestroyReason = 5
	DestroyFinished      DestroyReason = 6
)

// DestroyCell returns a DESTROY cell for circID.
func DestroyCell(circID uint32, reason DestroyReason) Cell {
	c := Cell{CircID: circID, Cmd: CmdDestroy}
	c.Payload[0] = byte(reason)
	return c
}
