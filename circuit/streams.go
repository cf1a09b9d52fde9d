package circuit

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Stream messages beyond BEGIN/DATA/END: the address in CONNECTED,
// RESOLVE/RESOLVED, and FIN (half-close).
//
// CONNECTED data is empty or the address the exit connected to:
//
//	AType (1: 4 or 6) | Addr (4 or 16)
//
// RESOLVE data:  HostLen (1) | Host    (the StreamID names the request)
// RESOLVED data: Status (1) | Count (1) | Count × (AType (1) | Addr | TTL (4))
//
// Status is 0 for success or an EndReason; Count is at most MaxResolved.
// FIN has no data: its sender will send no more DATA on the stream, but
// still reads; a stream is gone once both ends sent FIN, or either END.

// Limits.
const (
	MaxResolved = 16
	// MaxPendingResolves bounds the RESOLVE requests one circuit has open.
	MaxPendingResolves = 32
)

// ResolvedAddr is one answer to RESOLVE.
type ResolvedAddr struct {
	Addr netip.Addr
	TTL  uint32 // seconds
}

// ResolveRequest asks an exit driver to resolve a name.
type ResolveRequest struct {
	ID   uint16
	Host string
}

// ResolveAnswer is the exit's answer, as the client receives it.
type ResolveAnswer struct {
	ID     uint16
	Status EndReason // 0: success
	Addrs  []ResolvedAddr
}

func appendAddr(b []byte, a netip.Addr) []byte {
	a = a.Unmap()
	if a.Is4() {
		b = append(b, 4)
	} else {
		b = append(b, 6)
	}
	return append(b, a.AsSlice()...)
}

func decodeAddr(b []byte) (netip.Addr, []byte, error) {
	if len(b) < 1 {
		return netip.Addr{}, nil, ErrBadRelayMsg
	}
	switch b[0] {
	case 4:
		if len(b) < 5 {
			return netip.Addr{}, nil, ErrBadRelayMsg
		}
		return netip.AddrFrom4([4]byte(b[1:5])), b[5:], nil
	case 6:
		if len(b) < 17 {
			return netip.Addr{}, nil, ErrBadRelayMsg
		}
		a := netip.AddrFrom16([16]byte(b[1:17]))
		if a.Is4In6() {
			return netip.Addr{}, nil, ErrBadRelayMsg
		}
		return a, b[17:], nil
	}
	return netip.Addr{}, nil, ErrBadRelayMsg
}

// EncodeConnected returns CONNECTED data for addr (empty if invalid).
func EncodeConnected(addr netip.Addr) []byte {
	if !addr.IsValid() {
		return nil
	}
	return appendAddr(nil, addr)
}

// DecodeConnected parses CONNECTED data.
func DecodeConnected(b []byte) (netip.Addr, error) {
	if len(b) == 0 {
		return netip.Addr{}, nil
	}
	a, rest, err := decodeAddr(b)
	if err != nil || len(rest) != 0 {
		return netip.Addr{}, ErrBadRelayMsg
	}
	return a, nil
}

// EncodeResolve returns RESOLVE data.
func EncodeResolve(host string) ([]byte, error) {
	if !validHost(host) {
		return nil, ErrBadRelayMsg
	}
	return append([]byte{byte(len(host))}, host...), nil
}

// DecodeResolve parses RESOLVE data.
func DecodeResolve(b []byte) (string, error) {
	if len(b) < 1 || len(b) != 1+int(b[0]) || !validHost(string(b[1:])) {
		return "", ErrBadRelayMsg
	}
	return string(b[1:]), nil
}

// EncodeResolved returns RESOLVED data.
func EncodeResolved(status EndReason, addrs []ResolvedAddr) ([]byte, error) {
	if len(addrs) > MaxResolved || (status != 0 && len(addrs) != 0) {
		return nil, ErrBadRelayMsg
	}
	b := []byte{byte(status), byte(len(addrs))}
	for _, r := range addrs {
		if !r.Addr.IsValid() {
			return nil, ErrBadRelayMsg
		}
		b = appendAddr(b, r.Addr)
		b = binary.BigEndian.AppendUint32(b, r.TTL)
	}
	return b, nil
}

// DecodeResolved parses RESOLVED data.
func DecodeResolved(b []byte) (EndReason, []ResolvedAddr, error) {
	if len(b) < 2 || int(b[1]) > MaxResolved || (b[0] != 0 && b[1] != 0) {
		return 0, nil, ErrBadRelayMsg
	}
	status, n := EndReason(b[0]), int(b[1])
	rest := b[2:]
	addrs := make([]ResolvedAddr, 0, n)
	for range n {
		a, r, err := decodeAddr(rest)
		if err != nil || len(r) < 4 {
			return 0, nil, ErrBadRelayMsg
		}
		addrs = append(addrs, ResolvedAddr{Addr: a, TTL: binary.BigEndian.Uint32(r)})
		rest = r[4:]
	}
	if len(rest) != 0 {
		return 0, nil, ErrBadRelayMsg
	}
	return status, addrs, nil
}

// Client side.

// StreamAddr is the address the exit reported connecting to for stream id
// (invalid if it reported none).
func (c *ClientCircuit) StreamAddr(id uint16) netip.Addr {
	if s, ok := c.ep.streams[id]; ok {
		return s.addr
	}
	return netip.Addr{}
}

// FinishStream half-closes stream id: the client sends no more data but
// still reads until the exit finishes or ends the stream.
func (c *ClientCircuit) FinishStream(id uint16, a *ClientActions) error {
	c.acts = a
	return c.ep.finish(id)
}

// Resolve asks the exit to resolve host; the answer arrives in
// ClientActions.Resolved with the returned ID.
func (c *ClientCircuit) Resolve(host string, a *ClientActions) (uint16, error) {
	c.acts = a
	if len(c.hops) == 0 || c.pending != nil {
		return 0, fmt.Errorf("%w: circuit not built", ErrProtocol)
	}
	if len(c.resolves) >= MaxPendingResolves {
		return 0, ErrTooManyStreams
	}
	data, err := EncodeResolve(host)
	if err != nil {
		return 0, err
	}
	id, err := c.allocStreamID()
	if err != nil {
		return 0, err
	}
	if err := c.emitForward(RelayMsg{Cmd: RelayResolve, StreamID: id, Data: data}); err != nil {
		return 0, err
	}
	if c.resolves == nil {
		c.resolves = make(map[uint16]bool)
	}
	c.resolves[id] = true
	return id, nil
}

func (c *ClientCircuit) handleResolved(m RelayMsg) error {
	if !c.resolves[m.StreamID] {
		return fmt.Errorf("%w: unexpected RESOLVED", ErrProtocol)
	}
	delete(c.resolves, m.StreamID)
	status, addrs, err := DecodeResolved(m.Data)
	if err != nil {
		return err
	}
	c.acts.Resolved = append(c.acts.Resolved, ResolveAnswer{ID: m.StreamID, Status: status, Addrs: addrs})
	return nil
}

// Relay side.

func (rc *RelayCircuit) handleResolve(m RelayMsg) error {
	if m.StreamID == 0 || rc.resolves[m.StreamID] {
		return fmt.Errorf("%w: bad RESOLVE id", ErrProtocol)
	}
	host, err := DecodeResolve(m.Data)
	if err != nil {
		return err
	}
	if len(rc.resolves) >= MaxPendingResolves {
		data, _ := EncodeResolved(EndResourceLimit, nil)
		return rc.emitBackward(RelayMsg{Cmd: RelayResolved, StreamID: m.StreamID, Data: data})
	}
	if rc.resolves == nil {
		rc.resolves = make(map[uint16]bool)
	}
	rc.resolves[m.StreamID] = true
	rc.acts.Resolves = append(rc.acts.Resolves, ResolveRequest{ID: m.StreamID, Host: host})
	return nil
}

// Resolved answers a RESOLVE (status 0 with addresses, or an EndReason).
func (rc *RelayCircuit) Resolved(id uint16, status EndReason, addrs []ResolvedAddr, a *RelayActions) error {
	rc.acts = a
	if !rc.resolves[id] {
		return nil
	}
	delete(rc.resolves, id)
	if len(addrs) > MaxResolved {
		addrs = addrs[:MaxResolved]
	}
	data, err := EncodeResolved(status, addrs)
	if err != nil {
		return err
	}
	return rc.emitBackward(RelayMsg{Cmd: RelayResolved, StreamID: id, Data: data})
}

// StreamFinished half-closes stream id from the exit's side: the target
// sent EOF, so no more data will come, but the client may still send.
func (rc *RelayCircuit) StreamFinished(id uint16, a *RelayActions) error {
	rc.acts = a
	return rc.ep.finish(id)
}
