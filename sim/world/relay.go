package world

import (
	"crypto/ed25519"
	"errors"
	"sort"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/directory/dirtest"
	"github.com/veilnet/veil/relay"
	"github.com/veilnet/veil/sim/simnet"
)

// The relay driver: what package relay does around circuit.RelayCircuit
// (relay/circuits.go), without goroutines or locks. A link carries a
// circuit table keyed by circuit ID; CREATE cells are reassembled and
// answered with circuit.AcceptCreate; RELAY cells go through the circuit
// state machine, whose actions are carried out here: cells forwarded on
// the other link, EXTEND opening (or reusing) a link to the next relay
// and sending CREATE, BEGIN reaching a simulated server (exit.go). The
// limits are relay's: MaxPendingCreates, MaxCircuitsPerLink,
// ExtendTimeout, and CreateTimeout for a CREATE still arriving in
// fragments (expireCreates).

// Limits copied from package relay (keep in step; see the report's
// "refactor" notes).
const (
	maxPendingCreates  = 32
	maxCircuitsPerLink = 4096
	extendTimeout      = 30 * time.Second
)

// Relay is one relay: its keys and descriptor persist across crashes; its
// process (circuits, links) does not.
type Relay struct {
	w         *World
	name      string
	id        directory.RelayID
	key       ed25519.PrivateKey
	onion     *crypto.OnionKey
	linkKey   [32]byte
	behaviour string // "", "tag" or "drop"
	dt        *dirtest.Relay
	node      *simnet.Node
	rand      *simnet.Rand
	proc      *relayProc

	circuits      int // circuits accepted, over all processes
	integrityFail int // RELAY cells that failed this relay's layer check
	downSince     time.Time
	downFor       time.Duration
}

// relayProc is one run of a relay process: the simnet.Handler of its node.
type relayProc struct {
	r     *Relay
	dead  bool
	links map[simnet.NodeID]*rlink   // canonical link to each relay peer (lookup only)
	dials map[simnet.NodeID][]*rcirc // circuits waiting for a link being opened (lookup only)
	keys  []*crypto.OnionKey
}

var _ simnet.Handler = (*relayProc)(nil)

// rlink is one link as a relay sees it.
type rlink struct {
	l         *simnet.Link
	side      int
	initiator bool
	peer      *Relay // nil if the peer is a client
	circs     map[uint32]circSide
	pending   map[uint32]*pendingCreate
	// createTimer drops the pending CREATEs that have waited
	// relay.CreateTimeout; it is set while the link is open and pending
	// is not empty.
	createTimer *simnet.Timer
	nextID      uint32
}

// pendingCreate is a CREATE still arriving in fragments (relay's
// pendingCreate).
type pendingCreate struct {
	asm     *circuit.CreateAssembler
	started time.Time
}

type circSide struct {
	e    *rcirc
	prev bool // this link is the circuit's client-ward side
}

// rcirc is one circuit through a relay.
type rcirc struct {
	rc      *circuit.RelayCircuit
	prev    *rlink
	prevID  uint32
	next    *rlink
	nextID  uint32
	created bool
	dead    bool
	timer   *simnet.Timer
	extend  *circuit.ExtendRequest // while waiting for a link to the next hop
	acts    circuit.RelayActions
	streams []*exitStream
	adv     *advCirc // the adversary's view of the circuit (adversary.go); nil if none
}

func (r *Relay) start() {
	p := &relayProc{r: r, links: map[simnet.NodeID]*rlink{}, dials: map[simnet.NodeID][]*rcirc{},
		keys: []*crypto.OnionKey{r.onion}}
	r.proc = p
	r.node.SetHandler(p)
}

// Accepted registers a link a peer opened.
func (p *relayProc) Accepted(l *simnet.Link) {
	peer := p.r.w.byNode[l.End(0).ID]
	rl := p.newLink(l, 1, peer)
	if peer != nil && p.links[peer.node.ID] == nil {
		p.links[peer.node.ID] = rl
	}
}

func (p *relayProc) newLink(l *simnet.Link, side int, peer *Relay) *rlink {
	rl := &rlink{l: l, side: side, initiator: side == 0, peer: peer,
		circs: map[uint32]circSide{}, pending: map[uint32]*pendingCreate{}}
	l.State[side] = rl
	return rl
}

// Closed destroys every circuit that used the link and forgets its
// half-received CREATEs.
func (p *relayProc) Closed(l *simnet.Link) {
	rl, _ := l.State[l.Side(p.r.node)].(*rlink)
	if rl == nil {
		return
	}
	if rl.peer != nil && p.links[rl.peer.node.ID] == rl {
		delete(p.links, rl.peer.node.ID)
	}
	clear(rl.pending)
	rl.createTimer.Stop()
	rl.createTimer = nil
	p.forgetRefused(rl)
	for _, id := range sortedIDs(rl.circs) {
		p.destroy(rl.circs[id].e, circuit.DestroyConnectFailed, rl)
	}
}

func sortedIDs(m map[uint32]circSide) []uint32 {
	ids := make([]uint32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func (p *relayProc) send(rl *rlink, c *circuit.Cell) {
	if rl != nil {
		if v := p.r.w.vopr; v != nil {
			v.sent(p, rl, c)
		}
		rl.l.Send(p.r.node, c)
	}
}

// Cell handles one cell from a link, as relay.handleCell does.
func (p *relayProc) Cell(l *simnet.Link, c *circuit.Cell) {
	rl := l.State[l.Side(p.r.node)].(*rlink)
	if c.Cmd == circuit.CmdPadding {
		return
	}
	if c.Cmd == circuit.CmdCreate && p.createGate(rl, c) {
		return // refused or dropped by the CREATE limits (flood.go)
	}
	if pc := rl.pending[c.CircID]; c.Cmd == circuit.CmdCreate || pc != nil {
		p.handleCreate(rl, c, pc)
		return
	}
	side, ok := rl.circs[c.CircID]
	if !ok {
		return // a circuit already torn down
	}
	e := side.e
	if c.Cmd == circuit.CmdDestroy {
		p.destroy(e, circuit.DestroyNone, rl)
		return
	}
	e.acts.Reset()
	var err error
	switch {
	case c.Cmd == circuit.CmdRelay && side.prev:
		err = e.rc.HandleForward(&c.Payload, &e.acts)
		if err != nil {
			p.r.integrityFail++
		}
		p.r.w.noteForward(e, p, err)
		if v := p.r.w.vopr; v != nil && v.relayCell(p, e, true, err) {
			return
		}
	case c.Cmd == circuit.CmdRelay:
		err = e.rc.HandleBackward(&c.Payload, &e.acts)
		if v := p.r.w.vopr; v != nil {
			v.relayCell(p, e, false, err)
		}
	case c.Cmd == circuit.CmdCreated && !side.prev && !e.created:
		e.created = true
		e.timer.Stop()
		err = e.rc.HandleCreated(&c.Payload, &e.acts)
	default:
		err = circuit.ErrProtocol
	}
	if err != nil {
		p.destroy(e, circuit.DestroyProtocol, nil)
		return
	}
	p.apply(e)
}

// handleCreate collects a CREATE and answers it (relay.handleCreate).
func (p *relayProc) handleCreate(rl *rlink, c *circuit.Cell, pc *pendingCreate) {
	var (
		done bool
		err  error
	)
	if pc != nil {
		if c.Cmd != circuit.CmdCreate {
			err = circuit.ErrProtocol
		} else {
			done, err = pc.asm.Add(&c.Payload)
		}
	} else {
		// The side that opened the link picks IDs with the high bit set.
		if (c.CircID&circuit.CircIDHighBit != 0) == rl.initiator {
			rl.l.Close(p.r.node)
			p.Closed(rl.l)
			return
		}
		if _, dup := rl.circs[c.CircID]; dup {
			rl.l.Close(p.r.node)
			p.Closed(rl.l)
			return
		}
		if len(rl.circs) >= maxCircuitsPerLink || len(rl.pending) >= maxPendingCreates {
			d := circuit.DestroyCell(c.CircID, circuit.DestroyResourceLimit)
			p.send(rl, &d)
			return
		}
		pc = &pendingCreate{started: p.r.w.sim.Now()}
		pc.asm, done, err = circuit.StartCreate(&c.Payload)
	}
	if err != nil || done {
		delete(rl.pending, c.CircID)
	} else {
		rl.pending[c.CircID] = pc
		p.armCreateTimer(rl)
	}
	if err == nil && !done {
		return
	}
	var rc *circuit.RelayCircuit
	var created *[circuit.PayloadSize]byte
	if err == nil {
		ht, hdata := pc.asm.Message()
		rc, created, err = circuit.AcceptCreate(p.r.rand, p.r.w.sim.Now, p.r.id, p.keys, ht, hdata)
	}
	if err != nil {
		d := circuit.DestroyCell(c.CircID, circuit.DestroyProtocol)
		p.send(rl, &d)
		return
	}
	e := &rcirc{rc: rc, prev: rl, prevID: c.CircID}
	rl.circs[c.CircID] = circSide{e: e, prev: true}
	if v := p.r.w.vopr; v != nil {
		v.created(p, rl, c.CircID, e)
	}
	p.r.circuits++
	reply := circuit.Cell{CircID: c.CircID, Cmd: circuit.CmdCreated, Payload: *created}
	p.handshakeDone(rl, &reply) // after the relay's CPU time (flood.go)
}

// armCreateTimer sets rl's CREATE timer, if it is not set and rl has
// pending CREATEs, for when the oldest of them has waited
// relay.CreateTimeout.
func (p *relayProc) armCreateTimer(rl *rlink) {
	if rl.createTimer != nil || len(rl.pending) == 0 {
		return
	}
	var oldest time.Time
	for _, pc := range rl.pending {
		if oldest.IsZero() || pc.started.Before(oldest) {
			oldest = pc.started
		}
	}
	rl.createTimer = p.r.w.sim.At(oldest.Add(relay.CreateTimeout), func() { p.expireCreates(rl) })
}

// expireCreates drops rl's CREATEs that have waited relay.CreateTimeout
// for their last fragment, so that a peer sending only first fragments
// cannot hold the link's maxPendingCreates slots for ever. It does what
// relay.handleCreate does with them: it forgets them silently, with no
// DESTROY and no refusal counted (the relay counts a failed handshake,
// which the simulator's metrics do not have); a late fragment is then
// read as the first cell of a new CREATE, as there. The relay looks at
// the ages when the next CREATE arrives on the link, which is when a slot
// matters, so dropping at the deadline frees a slot no later than the
// relay would. No CPU or flood state (flood.go) belongs to a pending
// CREATE: a handshake is queued for the CPU only once its CREATE is
// complete, and the CREATE rate limit's token is spent at the first cell
// in both.
func (p *relayProc) expireCreates(rl *rlink) {
	rl.createTimer = nil
	if p.dead || rl.l.Closed() {
		return
	}
	now := p.r.w.sim.Now()
	for id, pc := range rl.pending {
		if now.Sub(pc.started) >= relay.CreateTimeout {
			delete(rl.pending, id)
		}
	}
	p.armCreateTimer(rl)
}

// apply carries out e.acts (relay.apply).
func (p *relayProc) apply(e *rcirc) {
	a := &e.acts
	p.flush(e, a)
	if a.Extend != nil {
		req := *a.Extend
		p.extend(e, &req)
	}
	for _, b := range a.Begins {
		p.begin(e, b)
	}
	for _, q := range a.Resolves {
		p.resolve(e, q)
	}
	for _, d := range a.Data {
		p.streamData(e, d)
	}
	for _, end := range a.Ends {
		p.removeStream(e, end.StreamID)
	}
	if len(a.Writable) > 0 && !e.dead {
		p.pump(e)
	}
}

// flush sends the cells of a on e's links, after the adversary's hook.
func (p *relayProc) flush(e *rcirc, a *circuit.RelayActions) {
	if e.dead {
		return
	}
	for i := range a.ToNext {
		c := &a.ToNext[i]
		c.CircID = e.nextID
		if p.r.behaviour != "" && c.Cmd == circuit.CmdRelay && !p.tamper(e, c) {
			continue
		}
		p.send(e.next, c)
	}
	for i := range a.ToPrev {
		c := &a.ToPrev[i]
		c.CircID = e.prevID
		p.send(e.prev, c)
	}
}

// destroy tears e down (relay.destroy): DESTROY on each link but from.
func (p *relayProc) destroy(e *rcirc, reason circuit.DestroyReason, from *rlink) {
	if e.dead {
		return
	}
	e.dead = true
	e.timer.Stop()
	e.streams = nil
	for _, s := range []struct {
		rl *rlink
		id uint32
	}{{e.prev, e.prevID}, {e.next, e.nextID}} {
		if s.rl == nil {
			continue
		}
		delete(s.rl.circs, s.id)
		if s.rl != from && !s.rl.l.Closed() {
			d := circuit.DestroyCell(s.id, reason)
			p.send(s.rl, &d)
		}
	}
}

var errExtend = errors.New("world: bad extend")

// extend opens or reuses a link to the requested relay and sends CREATE
// (relay.extend).
func (p *relayProc) extend(e *rcirc, req *circuit.ExtendRequest) {
	target := p.r.w.byID[directory.RelayID(req.Identity)]
	if req.Identity == p.r.id || req.LinkKey == p.r.linkKey || (e.prev.peer != nil && req.LinkKey == e.prev.peer.linkKey) {
		p.destroy(e, circuit.DestroyProtocol, nil)
		return
	}
	if target == nil || target.linkKey != req.LinkKey || target.node.Addr != req.Addr.Addr() {
		p.destroy(e, circuit.DestroyConnectFailed, nil) // nothing answers there
		return
	}
	nid := target.node.ID
	if rl := p.links[nid]; rl != nil && !rl.l.Closed() {
		p.sendCreate(e, rl, req)
		return
	}
	waiting, dialing := p.dials[nid]
	e.extend = req
	e.timer = p.r.w.sim.After(extendTimeout, func() { p.extendTimedOut(e) })
	p.dials[nid] = append(waiting, e)
	if dialing {
		return
	}
	p.r.w.net.Dial(p.r.node, target.node, func(l *simnet.Link, err error) {
		if p.dead {
			return
		}
		circs := p.dials[nid]
		delete(p.dials, nid)
		var rl *rlink
		if err == nil {
			rl = p.newLink(l, 0, target)
			if p.links[nid] == nil {
				p.links[nid] = rl
			}
		}
		for _, w := range circs {
			req := w.extend
			w.extend = nil
			if w.dead {
				continue
			}
			if rl == nil {
				p.destroy(w, circuit.DestroyConnectFailed, nil)
				continue
			}
			w.timer.Stop()
			p.sendCreate(w, rl, req)
		}
	})
}

func (p *relayProc) sendCreate(e *rcirc, rl *rlink, req *circuit.ExtendRequest) {
	id, err := rl.allocID()
	if err != nil {
		p.destroy(e, circuit.DestroyResourceLimit, nil)
		return
	}
	payloads, err := circuit.CreatePayloads(req.HType, req.Handshake)
	if err != nil {
		p.destroy(e, circuit.DestroyProtocol, nil)
		return
	}
	rl.circs[id] = circSide{e: e, prev: false}
	e.next, e.nextID = rl, id
	for i := range payloads {
		c := circuit.Cell{CircID: id, Cmd: circuit.CmdCreate, Payload: payloads[i]}
		p.send(rl, &c)
	}
	e.timer = p.r.w.sim.After(extendTimeout, func() { p.extendTimedOut(e) })
}

func (p *relayProc) extendTimedOut(e *rcirc) {
	if !p.dead && !e.created && !e.dead {
		p.destroy(e, circuit.DestroyConnectFailed, nil)
	}
}

// allocID picks a free circuit ID in this side's half (relay's allocID).
func (rl *rlink) allocID() (uint32, error) {
	if len(rl.circs) >= maxCircuitsPerLink {
		return 0, errExtend
	}
	high := uint32(0)
	if rl.initiator {
		high = circuit.CircIDHighBit
	}
	for range maxCircuitsPerLink + 1 {
		rl.nextID = (rl.nextID + 1) &^ circuit.CircIDHighBit
		if rl.nextID == 0 {
			continue
		}
		if _, used := rl.circs[rl.nextID|high]; !used {
			return rl.nextID | high, nil
		}
	}
	return 0, errExtend
}

// crash stops the relay's process.
func (r *Relay) crash() {
	if !r.node.Up() {
		return
	}
	r.proc.dead = true
	r.w.net.Crash(r.node)
	r.dt.Alive = false
	r.downSince = r.w.sim.Now()
}

// restart starts a fresh process with the same keys.
func (r *Relay) restart() {
	if r.node.Up() {
		return
	}
	r.downFor += r.w.sim.Now().Sub(r.downSince)
	p := &relayProc{r: r, links: map[simnet.NodeID]*rlink{}, dials: map[simnet.NodeID][]*rcirc{},
		keys: []*crypto.OnionKey{r.onion}}
	r.proc = p
	r.w.net.Restart(r.node, p)
	r.dt.Alive = true
}
