package relay

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/internal/linkio"
	"github.com/veilnet/veil/relay/metrics"
)

// linkState is one link and the circuits that use it.
type linkState struct {
	link    *linkio.Conn
	sched   *linkSched
	remote  netip.Addr // the peer's address (limits only; never logged by default)
	relay   bool       // the peer is a relay: we dialed it, or it is in the consensus
	mu      sync.Mutex
	circs   map[uint32]circSide
	pending map[uint32]*pendingCreate // CREATEs still arriving in fragments
	// refused counts the continuation cells still to come of CREATEs
	// refused at their first cell: they are dropped, not read as new
	// CREATEs (which would answer one circuit with several DESTROYs).
	refused map[uint32]int
	nextID  uint32
	// active is when the link last carried a cell (unix nanoseconds of
	// the relay's clock), for closing idle links.
	active atomic.Int64
}

// maxRefusedCreates bounds the refused CREATEs whose continuations one link
// may still owe; past it the link is closed.
const maxRefusedCreates = 64

// errTooManyRefused closes a link that keeps sending refused CREATEs.
var errTooManyRefused = errors.New("relay: too many refused CREATEs in flight on a link")

type pendingCreate struct {
	asm     *circuit.CreateAssembler
	started time.Time
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
	prevQ   *cellQueue // cells toward the client, on prev's scheduler
	next    *linkState
	nextID  uint32
	nextQ   *cellQueue // cells toward the next hop, on next's scheduler
	streams map[uint16]*exitStream
	dead    bool
	created bool        // the next hop answered CREATED
	timer   *time.Timer // ExtendTimeout while waiting for CREATED
	queued  atomic.Int64
}

var errCircuitIDs = errors.New("relay: no free circuit ID on link")

// addLink registers a link, starts its writer and makes it the canonical
// link to its peer if it is the preferred one (canonical.go).
func (r *Relay) addLink(link *linkio.Conn, dialed bool) (*linkState, bool) {
	ls := &linkState{link: link, remote: remoteAddr(link.RemoteAddr()), relay: dialed || r.isKnownRelay(link.PeerStatic()),
		circs: make(map[uint32]circSide), pending: make(map[uint32]*pendingCreate), refused: make(map[uint32]int)}
	ls.sched = newLinkSched(r, link)
	ls.active.Store(r.cfg.Now().UnixNano())
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, false
	}
	r.links[link] = ls
	r.setCanonical(ls)
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		ls.sched.run()
	}()
	r.metrics.Links.WithLabelValues(direction(dialed)).Inc()
	return ls, true
}

func direction(dialed bool) string {
	if dialed {
		return "outbound"
	}
	return "inbound"
}

// serveLink reads cells from a link until it closes, then destroys every
// circuit that used it.
func (r *Relay) serveLink(link *linkio.Conn, dialed bool) {
	ls, ok := r.addLink(link, dialed)
	if !ok {
		link.Close()
		return
	}
	r.readLink(ls, dialed)
}

// readLink is serveLink for a link already registered.
func (r *Relay) readLink(ls *linkState, dialed bool) {
	link := ls.link
	rd := &linkReader{r: r, ls: ls}
	err := link.ReadBatches(rd.handle, rd.flush)
	if rd.run.e != nil { // the link failed in the middle of a read
		rd.endRun()
	}
	r.log.Debug("link closed", "err", r.safeErr(err))
	r.mu.Lock()
	delete(r.links, link)
	r.unsetCanonical(ls)
	r.mu.Unlock()
	r.metrics.Links.WithLabelValues(direction(dialed)).Dec()
	ls.mu.Lock()
	sides := make([]circSide, 0, len(ls.circs))
	for _, s := range ls.circs {
		sides = append(sides, s)
	}
	ls.pending = nil
	ls.mu.Unlock()
	for _, s := range sides {
		r.destroy(s.e, circuit.DestroyConnectFailed, ls)
	}
}

// linkReader is the state of one link's reader goroutine: the writers it
// must wake at the end of each batch of cells, the cells it counted
// (metrics and the idle clock are updated once per batch, not per cell),
// and the run of one circuit's cells it is in.
//
// A run: consecutive RELAY cells of one circuit in one read are handled
// under one hold of the circuit's mutex, without looking the circuit up
// again, and the cells they produce are queued together, one push per
// maxRun cells instead of one per cell. A run ends at another circuit's
// cell or any other command, at an action other than passing cells on
// (those are carried out at once), after maxRun cells, and at the end of
// the read (flush), before the reader writes to any link. The mutex is
// what orders a circuit's sealed cells with its queue (an exit's stream
// goroutines seal under it too), so the run's cells are queued before it
// is released.
type linkReader struct {
	r     *Relay
	ls    *linkState
	w     waker
	cells int
	// acts is the reader's scratch for the actions of the current run:
	// kept here, not per circuit, so that an idle circuit holds no cell
	// buffers.
	acts circuit.RelayActions
	// run is the circuit of the current run as seen from this link, its
	// mu held (run.e nil: no run); runID is its circuit ID on this link;
	// runCells counts the cells whose products wait in acts.
	run      circSide
	runID    uint32
	runCells int
}

// maxRun bounds the cells of a run whose products wait in a reader's
// acts (at most 8 KiB held by a link that has been busy).
const maxRun = 16

func (rd *linkReader) handle(c *circuit.Cell) error {
	rd.cells++
	if rd.run.e != nil {
		if c.Cmd == circuit.CmdRelay && c.CircID == rd.runID {
			rd.relayCell(c)
			return nil
		}
		rd.endRun()
	}
	return rd.handleCell(c)
}

// flush runs after each batch the link's reader read.
func (rd *linkReader) flush() error {
	if rd.run.e != nil {
		rd.endRun()
	}
	rd.w.flush()
	rd.ls.active.Store(rd.r.cfg.Now().UnixNano())
	rd.r.metrics.CellsRead.Add(float64(rd.cells))
	rd.r.metrics.BytesRead.Add(float64(rd.cells * circuit.CellSize))
	rd.cells = 0
	return nil
}

// relayCell handles a RELAY cell of the current run.
func (rd *linkReader) relayCell(c *circuit.Cell) {
	e, a := rd.run.e, &rd.acts
	var err error
	if rd.run.prev {
		err = e.rc.HandleForward(&c.Payload, a)
	} else {
		err = e.rc.HandleBackward(&c.Payload, a)
	}
	if err != nil {
		// The circuit is destroyed: what the run produced so far would
		// be dropped with its queues anyway.
		rd.runCells = 0
		rd.endRun()
		rd.r.log.Debug("destroying circuit", "err", err)
		rd.r.destroy(e, circuit.DestroyProtocol, nil)
		return
	}
	rd.runCells++
	if rd.runCells >= maxRun || !a.OnlyCells() {
		rd.applyRun()
	}
}

// applyRun carries out the run's actions so far; the run goes on.
func (rd *linkReader) applyRun() {
	if rd.runCells > 0 {
		rd.r.applyBatched(rd.run.e, &rd.acts, &rd.w)
	}
	rd.acts.Reset()
	rd.runCells = 0
}

// endRun carries out the run's actions and releases its circuit.
func (rd *linkReader) endRun() {
	e := rd.run.e
	rd.applyRun()
	rd.run = circSide{}
	e.mu.Unlock()
}

// handleCell takes one cell from the reader's link that continues no run.
// Writers it queues cells for are woken at the reader's flush.
func (rd *linkReader) handleCell(c *circuit.Cell) error {
	r, ls := rd.r, rd.ls
	ls.mu.Lock()
	pc := ls.pending[c.CircID]
	if n, ok := ls.refused[c.CircID]; ok && c.Cmd == circuit.CmdCreate {
		if n <= 1 {
			delete(ls.refused, c.CircID)
		} else {
			ls.refused[c.CircID] = n - 1
		}
		ls.mu.Unlock()
		return nil // the rest of a CREATE already refused
	}
	side, ok := ls.circs[c.CircID]
	ls.mu.Unlock()
	if c.Cmd == circuit.CmdCreate || pc != nil {
		return r.handleCreate(ls, c, pc)
	}
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
	if c.Cmd == circuit.CmdRelay {
		rd.acts.Reset()
		rd.run, rd.runID, rd.runCells = side, c.CircID, 0
		rd.relayCell(c)
		return nil
	}
	a := &rd.acts
	a.Reset()
	var err error
	if c.Cmd == circuit.CmdCreated && !side.prev && !e.created {
		e.created = true
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil // an idle circuit keeps no timer
		}
		r.metrics.Handshake("extend", true)
		err = e.rc.HandleCreated(&c.Payload, a)
	} else {
		err = circuit.ErrProtocol
	}
	if err == nil {
		r.applyBatched(e, a, &rd.w)
	}
	e.mu.Unlock()
	if err != nil {
		r.log.Debug("destroying circuit", "err", err)
		r.destroy(e, circuit.DestroyProtocol, nil)
	}
	return nil
}

// refuseCreate answers a CREATE with DESTROY(reason), counting why.
func (r *Relay) refuseCreate(ls *linkState, id uint32, reason circuit.DestroyReason, why string) error {
	if why != "" {
		r.metrics.Refuse(why)
	}
	return ls.sched.control(circuit.DestroyCell(id, reason))
}

// handleCreate takes a CREATE cell, or any cell for a circuit whose
// CREATE is still arriving in fragments (pc != nil).
func (r *Relay) handleCreate(ls *linkState, c *circuit.Cell, pc *pendingCreate) error {
	var (
		done bool
		err  error
	)
	now := r.cfg.Now()
	first := pc == nil
	if pc != nil {
		if c.Cmd != circuit.CmdCreate {
			err = circuit.ErrProtocol
		} else {
			done, err = pc.asm.Add(&c.Payload)
		}
	} else {
		// The side that opened the link picks IDs with the high bit set.
		peerOpened := !ls.link.Initiator()
		if (c.CircID&circuit.CircIDHighBit != 0) != peerOpened {
			return errors.New("relay: CREATE with a circuit ID from the wrong half")
		}
		ls.mu.Lock()
		_, dup := ls.circs[c.CircID]
		for id, p := range ls.pending {
			if now.Sub(p.started) > CreateTimeout {
				delete(ls.pending, id)
				r.metrics.Handshake("circuit", false)
			}
		}
		fullCircs := len(ls.circs) >= MaxCircuitsPerLink
		fullPending := len(ls.pending) >= MaxPendingCreates
		ls.mu.Unlock()
		refuse := func(reason circuit.DestroyReason, why string) error {
			if n := circuit.CreateContinuations(&c.Payload); n > 0 {
				ls.mu.Lock()
				full := len(ls.refused) >= maxRefusedCreates
				if !full && ls.refused != nil {
					ls.refused[c.CircID] = n
				}
				ls.mu.Unlock()
				if full {
					return errTooManyRefused
				}
			}
			return r.refuseCreate(ls, c.CircID, reason, why)
		}
		switch {
		case dup:
			return errors.New("relay: CREATE for an existing circuit")
		case r.draining.Load():
			return refuse(circuit.DestroyResourceLimit, metrics.RefuseDraining)
		case fullCircs:
			return refuse(circuit.DestroyResourceLimit, metrics.RefuseCircuitsPerLink)
		case fullPending:
			return refuse(circuit.DestroyResourceLimit, metrics.RefusePendingCreates)
		case !ls.relay && !r.isKnownRelay(ls.link.PeerStatic()) && !r.creates.Allow(ls.remote, now):
			return refuse(circuit.DestroyResourceLimit, metrics.RefuseCreateRate)
		}
		pc = &pendingCreate{started: now}
		pc.asm, done, err = circuit.StartCreate(&c.Payload)
	}
	ls.mu.Lock()
	if ls.pending != nil {
		if err != nil || done {
			delete(ls.pending, c.CircID)
		} else {
			ls.pending[c.CircID] = pc
		}
	}
	ls.mu.Unlock()
	if err != nil {
		r.metrics.Handshake("circuit", false)
		r.log.Debug("refusing CREATE", "err", err)
		if first {
			// Drop what the peer will still send of this message.
			ls.mu.Lock()
			if n := circuit.CreateContinuations(&c.Payload); n > 0 && ls.refused != nil && len(ls.refused) < maxRefusedCreates {
				ls.refused[c.CircID] = n
			}
			ls.mu.Unlock()
		}
		return r.refuseCreate(ls, c.CircID, circuit.DestroyProtocol, "")
	}
	if !done {
		return nil
	}
	ht, hdata := pc.asm.Message()
	rc, created, err := circuit.AcceptCreate(r.cfg.Rand, r.cfg.Now, r.id, r.onionKeys(), ht, hdata)
	r.metrics.Handshake("circuit", err == nil)
	if err != nil {
		r.log.Debug("refusing CREATE", "err", err)
		return r.refuseCreate(ls, c.CircID, circuit.DestroyProtocol, "")
	}
	e := &circEntry{rc: rc, prev: ls, prevID: c.CircID}
	e.prevQ = ls.sched.newQueue(e)
	ls.mu.Lock()
	if ls.pending == nil { // the link closed meanwhile
		ls.mu.Unlock()
		return nil
	}
	ls.circs[c.CircID] = circSide{e: e, prev: true}
	ls.mu.Unlock()
	r.mu.Lock()
	r.circs[e] = struct{}{}
	r.mu.Unlock()
	r.metrics.Circuits.Inc()
	reply := circuit.Cell{CircID: c.CircID, Cmd: circuit.CmdCreated, Payload: *created}
	if ls.sched.push(e.prevQ, nil, reply) != nil {
		r.destroy(e, circuit.DestroyResourceLimit, nil)
	}
	return nil
}

// apply carries out a, the actions of one step of e. e.mu is held. It
// never blocks: cells go to the circuit's queues, and a queue that
// overflows has the circuit destroyed (asynchronously: destroy takes
// e.mu). a is the caller's scratch (a link reader's, or a stream
// goroutine's), not e's: an idle circuit keeps no action buffers.
func (r *Relay) apply(e *circEntry, a *circuit.RelayActions) { r.applyBatched(e, a, nil) }

// applyBatched is apply for a link reader: the writers it queues cells for
// are woken at w's flush.
func (r *Relay) applyBatched(e *circEntry, a *circuit.RelayActions, w *waker) {
	overflow := false
	if len(a.ToNext) > 0 && e.next != nil {
		for i := range a.ToNext {
			a.ToNext[i].CircID = e.nextID
		}
		overflow = e.next.sched.push(e.nextQ, w, a.ToNext...) != nil
	}
	if len(a.ToPrev) > 0 && !overflow {
		for i := range a.ToPrev {
			a.ToPrev[i].CircID = e.prevID
		}
		overflow = e.prev.sched.push(e.prevQ, w, a.ToPrev...) != nil
	}
	if overflow {
		r.metrics.Refuse(metrics.RefuseQueueFull)
		r.spawn(func() { r.destroy(e, circuit.DestroyResourceLimit, nil) })
		return
	}
	if a.Extend != nil {
		req := *a.Extend
		r.goCtx(func(ctx context.Context) { r.extend(ctx, e, &req) })
	}
	for _, b := range a.Begins {
		r.goCtx(func(ctx context.Context) { r.begin(ctx, e, b) })
	}
	for _, q := range a.Resolves {
		r.goCtx(func(ctx context.Context) { r.resolveFor(ctx, e, q) })
	}
	for _, d := range a.Data {
		if s := e.streams[d.StreamID]; s != nil {
			s.deliver(d.Data)
		}
	}
	for _, id := range a.Finished {
		if s := e.streams[id]; s != nil {
			s.finish()
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
	ctx := r.ctx
	r.mu.Unlock()
	if ctx == nil {
		return
	}
	r.spawn(func() { f(ctx) })
}

// destroy tears e down: its streams close, its queued cells are dropped
// and the link other than from (nil: both) gets a DESTROY.
func (r *Relay) destroy(e *circEntry, reason circuit.DestroyReason, from *linkState) {
	e.mu.Lock()
	if e.dead {
		e.mu.Unlock()
		return
	}
	e.dead = true
	streams := e.streams
	e.streams = nil
	if e.timer != nil {
		e.timer.Stop()
	}
	e.mu.Unlock()
	r.mu.Lock()
	_, listed := r.circs[e]
	delete(r.circs, e)
	r.mu.Unlock()
	if listed {
		r.metrics.Circuits.Dec()
	}
	for _, s := range streams {
		s.close()
	}
	for _, side := range []struct {
		ls *linkState
		id uint32
		q  *cellQueue
	}{{e.prev, e.prevID, e.prevQ}, {e.next, e.nextID, e.nextQ}} {
		if side.ls == nil {
			continue
		}
		if side.q != nil {
			side.ls.sched.drop(side.q)
		}
		side.ls.mu.Lock()
		delete(side.ls.circs, side.id)
		side.ls.mu.Unlock()
		if side.ls != from {
			side.ls.sched.control(circuit.DestroyCell(side.id, reason))
		}
	}
}

// extend opens (or reuses) a link to the requested relay and sends CREATE.
func (r *Relay) extend(ctx context.Context, e *circEntry, req *circuit.ExtendRequest) {
	if req.Identity == r.id || req.LinkKey == r.cfg.LinkKey.Public || req.LinkKey == e.prev.link.PeerStatic() {
		// Never to itself, and never back to the previous hop: a circuit
		// that doubles back gains nothing and helps correlate.
		r.metrics.Refuse(metrics.RefuseExtend)
		r.destroy(e, circuit.DestroyProtocol, nil)
		return
	}
	if !r.cfg.ExtendAllowPrivate && (isPrivate(req.Addr.Addr()) || req.Addr.Addr() == r.cfg.Advertise.Addr()) {
		// Relays live on public addresses; extending to a private one
		// would let clients probe the relay's own network.
		r.metrics.Refuse(metrics.RefuseExtend)
		r.destroy(e, circuit.DestroyConnectFailed, nil)
		return
	}
	ls, err := r.linkTo(ctx, req.Addr, req.LinkKey)
	if err != nil {
		r.metrics.Handshake("extend", false)
		r.log.Debug("extend failed", "err", r.safeErr(err))
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
		r.metrics.Refuse(metrics.RefuseCircuitsPerLink)
		r.destroy(e, circuit.DestroyResourceLimit, nil)
		return
	}
	payloads, perr := circuit.CreatePayloads(req.HType, req.Handshake)
	e.mu.Lock()
	if e.dead {
		e.mu.Unlock()
		ls.mu.Lock()
		delete(ls.circs, id)
		ls.mu.Unlock()
		return
	}
	e.next, e.nextID = ls, id
	e.nextQ = ls.sched.newQueue(e)
	if perr == nil {
		cells := make([]circuit.Cell, len(payloads))
		for i := range payloads {
			cells[i] = circuit.Cell{CircID: id, Cmd: circuit.CmdCreate, Payload: payloads[i]}
		}
		perr = ls.sched.push(e.nextQ, nil, cells...)
		e.timer = time.AfterFunc(ExtendTimeout, func() { r.extendTimedOut(e) })
	}
	e.mu.Unlock()
	if perr != nil {
		r.destroy(e, circuit.DestroyConnectFailed, nil)
	}
}

// extendTimedOut destroys e if the next hop never answered CREATED.
func (r *Relay) extendTimedOut(e *circEntry) {
	e.mu.Lock()
	waiting := !e.created && !e.dead
	e.mu.Unlock()
	if waiting {
		r.metrics.Handshake("extend", false)
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
