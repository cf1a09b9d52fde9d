package relay

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/internal/linkio"
)

// linkState is one link and the circuits that use it.
type linkState struct {
	link    *linkio.Conn
	mu      sync.Mutex
	circs   map[uint32]circSide
	pending map[uint32]*circuit.CreateAssembler // CREATEs still arriving in fragments
	nextID  uint32
}

// MaxPendingCreates bounds the fragmented CREATEs one link may have in
// progress at once.
const MaxPendingCreates = 32

// circSide is a circuit as seen from one of its two links.
type circSide struct {
	e    *circEntry
	prev bool // this link is the circuit's client-ward side
}

// circEntry is one circuit through this relay. Its mutex serializes every
// call into the circuit state machine and the execution of the actions.
type circEntry struct {
	mu      sync.Mutex
	rc      *circuit.RelayCircuit
	prev    *linkState
	prevID  uint32
	next    *linkState
	nextID  uint32
	streams map[uint16]*exitStream
	acts    circuit.RelayActions
	dead    bool
}

var errCircuitIDs = errors.New("relay: no free circuit ID on link")

func (r *Relay) addLink(link *linkio.Conn) (*linkState, bool) {
	ls := &linkState{link: link, circs: make(map[uint32]circSide), pending: make(map[uint32]*circuit.CreateAssembler)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false
	}
	r.links[link] = ls
	return ls, true
}

// serveLink reads cells from a link until it closes, then destroys every
// circuit that used it.
func (r *Relay) serveLink(link *linkio.Conn) {
	ls, ok := r.addLink(link)
	if !ok {
		link.Close()
		return
	}
	r.readLink(ls)
}

// readLink is serveLink for a link already registered.
func (r *Relay) readLink(ls *linkState) {
	link := ls.link
	err := link.ReadLoop(func(c *circuit.Cell) error { return r.handleCell(ls, c) })
	r.log.Debug("link closed", "err", err)
	r.mu.Lock()
	delete(r.links, link)
	if r.byKey[link.PeerStatic()] == link {
		delete(r.byKey, link.PeerStatic())
	}
	r.mu.Unlock()
	ls.mu.Lock()
	sides := make([]circSide, 0, len(ls.circs))
	for _, s := range ls.circs {
		sides = append(sides, s)
	}
	ls.mu.Unlock()
	for _, s := range sides {
		r.destroy(s.e, circuit.DestroyConnectFailed, ls)
	}
}

func (r *Relay) handleCell(ls *linkState, c *circuit.Cell) error {
	ls.mu.Lock()
	asm := ls.pending[c.CircID]
	ls.mu.Unlock()
	if c.Cmd == circuit.CmdCreate || asm != nil {
		return r.handleCreate(ls, c, asm)
	}
	ls.mu.Lock()
	side, ok := ls.circs[c.CircID]
	ls.mu.Unlock()
	if !ok {
		return nil // a circuit we already tore down; cells may still be in flight
	}
	e := side.e
	if c.Cmd == circuit.CmdDestroy {
		// Pass on no reason of the neighbour's: a byte chosen by one hop
		// and carried across an honest one would be a covert channel.
		r.destroy(e, circuit.DestroyNone, ls)
		return nil
	}
	e.mu.Lock()
	if e.dead {
		e.mu.Unlock()
		return nil
	}
	e.acts.Reset()
	var err error
	switch {
	case c.Cmd == circuit.CmdRelay && side.prev:
		err = e.rc.HandleForward(&c.Payload, &e.acts)
	case c.Cmd == circuit.CmdRelay:
		err = e.rc.HandleBackward(&c.Payload, &e.acts)
	case c.Cmd == circuit.CmdCreated && !side.prev:
		err = e.rc.HandleCreated(&c.Payload, &e.acts)
	default:
		err = circuit.ErrProtocol
	}
	if err == nil {
		r.apply(e)
	}
	e.mu.Unlock()
	if err != nil {
		r.log.Debug("destroying circuit", "err", err)
		r.destroy(e, circuit.DestroyProtocol, nil)
	}
	return nil
}

// handleCreate takes a CREATE cell, or any cell for a circuit whose
// CREATE is still arriving in fragments (asm != nil).
func (r *Relay) handleCreate(ls *linkState, c *circuit.Cell, asm *circuit.CreateAssembler) error {
	var (
		done bool
		err  error
	)
	if asm != nil {
		if c.Cmd != circuit.CmdCreate {
			err = circuit.ErrProtocol
		} else {
			done, err = asm.Add(&c.Payload)
		}
	} else {
		// The side that opened the link picks IDs with the high bit set.
		peerOpened := !ls.link.Initiator()
		if (c.CircID&circuit.CircIDHighBit != 0) != peerOpened {
			return errors.New("relay: CREATE with a circuit ID from the wrong half")
		}
		ls.mu.Lock()
		_, dup := ls.circs[c.CircID]
		full := len(ls.circs) >= MaxCircuitsPerLink || len(ls.pending) >= MaxPendingCreates
		ls.mu.Unlock()
		if dup {
			return errors.New("relay: CREATE for an existing circuit")
		}
		if full {
			d := circuit.DestroyCell(c.CircID, circuit.DestroyResourceLimit)
			return ls.link.Send(&d)
		}
		asm, done, err = circuit.StartCreate(&c.Payload)
	}
	ls.mu.Lock()
	if err != nil || done {
		delete(ls.pending, c.CircID)
	} else {
		ls.pending[c.CircID] = asm
	}
	ls.mu.Unlock()
	if err != nil {
		r.log.Debug("refusing CREATE", "err", err)
		d := circuit.DestroyCell(c.CircID, circuit.DestroyProtocol)
		return ls.link.Send(&d)
	}
	if !done {
		return nil
	}
	ht, hdata := asm.Message()
	rc, created, err := circuit.AcceptCreate(r.cfg.Rand, r.cfg.Now, r.id, r.onions, ht, hdata)
	if err != nil {
		r.log.Debug("refusing CREATE", "err", err)
		d := circuit.DestroyCell(c.CircID, circuit.DestroyProtocol)
		return ls.link.Send(&d)
	}
	e := &circEntry{rc: rc, prev: ls, prevID: c.CircID, streams: make(map[uint16]*exitStream)}
	ls.mu.Lock()
	ls.circs[c.CircID] = circSide{e: e, prev: true}
	ls.mu.Unlock()
	reply := circuit.Cell{CircID: c.CircID, Cmd: circuit.CmdCreated, Payload: *created}
	return ls.link.Send(&reply)
}

// apply carries out e.acts. e.mu is held.
func (r *Relay) apply(e *circEntry) {
	a := &e.acts
	for i := range a.ToNext {
		a.ToNext[i].CircID = e.nextID
		if e.next.link.Send(&a.ToNext[i]) != nil {
			break
		}
	}
	for i := range a.ToPrev {
		a.ToPrev[i].CircID = e.prevID
		if e.prev.link.Send(&a.ToPrev[i]) != nil {
			break
		}
	}
	if a.Extend != nil {
		req := *a.Extend
		r.goCtx(func(ctx context.Context) { r.extend(ctx, e, &req) })
	}
	for _, b := range a.Begins {
		r.goCtx(func(ctx context.Context) { r.begin(ctx, e, b) })
	}
	for _, d := range a.Data {
		if s := e.streams[d.StreamID]; s != nil {
			s.deliver(d.Data)
		}
	}
	for _, end := range a.Ends {
		if s := e.streams[end.StreamID]; s != nil {
			delete(e.streams, end.StreamID)
			s.close()
		}
	}
	for _, id := range a.Writable {
		if id == 0 {
			for _, s := range e.streams {
				s.wake()
			}
		} else if s := e.streams[id]; s != nil {
			s.wake()
		}
	}
}

// goCtx runs f in a goroutine the relay waits for on shutdown.
func (r *Relay) goCtx(f func(context.Context)) {
	r.mu.Lock()
	if r.closed || r.ctx == nil {
		r.mu.Unlock()
		return
	}
	ctx := r.ctx
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		f(ctx)
	}()
}

// destroy tears e down: its streams close and the link other than from
// (nil: both) gets a DESTROY.
func (r *Relay) destroy(e *circEntry, reason circuit.DestroyReason, from *linkState) {
	e.mu.Lock()
	if e.dead {
		e.mu.Unlock()
		return
	}
	e.dead = true
	streams := e.streams
	e.streams = nil
	e.mu.Unlock()
	for _, s := range streams {
		s.close()
	}
	for _, side := range []struct {
		ls *linkState
		id uint32
	}{{e.prev, e.prevID}, {e.next, e.nextID}} {
		if side.ls == nil {
			continue
		}
		side.ls.mu.Lock()
		delete(side.ls.circs, side.id)
		side.ls.mu.Unlock()
		if side.ls != from {
			d := circuit.DestroyCell(side.id, reason)
			side.ls.link.Send(&d)
		}
	}
}

// extend opens (or reuses) a link to the requested relay and sends CREATE.
func (r *Relay) extend(ctx context.Context, e *circEntry, req *circuit.ExtendRequest) {
	if req.Identity == r.id || req.LinkKey == r.cfg.LinkKey.Public || req.LinkKey == e.prev.link.PeerStatic() {
		// Never to itself, and never back to the previous hop: a circuit
		// that doubles back gains nothing and helps correlate.
		r.destroy(e, circuit.DestroyProtocol, nil)
		return
	}
	if !r.cfg.ExtendAllowPrivate && (isPrivate(req.Addr.Addr()) || req.Addr.Addr() == r.cfg.Advertise.Addr()) {
		// Relays live on public addresses; extending to a private one
		// would let clients probe the relay's own network.
		r.destroy(e, circuit.DestroyConnectFailed, nil)
		return
	}
	ls, err := r.linkTo(ctx, req.Addr, req.LinkKey)
	if err != nil {
		r.log.Debug("extend failed", "err", err)
		r.destroy(e, circuit.DestroyConnectFailed, nil)
		return
	}
	ls.mu.Lock()
	id, err := ls.allocID()
	if err == nil {
		ls.circs[id] = circSide{e: e, prev: false}
	}
	ls.mu.Unlock()
	if err != nil {
		r.destroy(e, circuit.DestroyResourceLimit, nil)
		return
	}
	e.mu.Lock()
	if e.dead {
		e.mu.Unlock()
		ls.mu.Lock()
		delete(ls.circs, id)
		ls.mu.Unlock()
		return
	}
	e.next, e.nextID = ls, id
	e.mu.Unlock()
	payloads, err := circuit.CreatePayloads(req.HType, req.Handshake)
	for i := 0; err == nil && i < len(payloads); i++ {
		cell := circuit.Cell{CircID: id, Cmd: circuit.CmdCreate, Payload: payloads[i]}
		err = ls.link.Send(&cell)
	}
	if err != nil {
		r.destroy(e, circuit.DestroyConnectFailed, nil)
	}
}

// allocID picks a free circuit ID in this side's half. ls.mu is held.
func (ls *linkState) allocID() (uint32, error) {
	if len(ls.circs) >= MaxCircuitsPerLink {
		return 0, errCircuitIDs
	}
	high := uint32(0)
	if ls.link.Initiator() {
		high = circuit.CircIDHighBit
	}
	for range MaxCircuitsPerLink + 1 {
		ls.nextID = (ls.nextID + 1) &^ circuit.CircIDHighBit
		if ls.nextID == 0 {
			continue
		}
		id := ls.nextID | high
		if _, used := ls.circs[id]; !used {
			return id, nil
		}
	}
	return 0, errCircuitIDs
}

// linkTo returns the canonical link to the relay with link key key,
// dialing it if there is none.
func (r *Relay) linkTo(ctx context.Context, addr netip.AddrPort, key [32]byte) (*linkState, error) {
	r.mu.Lock()
	if l, ok := r.byKey[key]; ok {
		ls := r.links[l]
		r.mu.Unlock()
		if ls != nil {
			return ls, nil
		}
	} else {
		r.mu.Unlock()
	}
	link, err := linkio.Dial(ctx, &r.dialer, addr.String(), &r.cfg.LinkKey, key, r.cfg.Rand)
	if err != nil {
		return nil, err
	}
	ls, ok := r.addLink(link)
	if !ok {
		link.Close()
		return nil, errors.New("relay: shutting down")
	}
	r.mu.Lock()
	r.byKey[key] = link
	r.mu.Unlock()
	r.goCtx(func(context.Context) { r.readLink(ls) })
	return ls, nil
}
