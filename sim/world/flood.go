package world

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay"
	"github.com/veilnet/veil/sim/report"
	"github.com/veilnet/veil/sim/scenario"
	"github.com/veilnet/veil/sim/simnet"
)

// Relay CPU, the CREATE rate limit, and CREATE floods.
//
// Relay CPU. Virtual time would make handshakes free, so a relay spends
// relays.handshake_cpu of CPU time on each CREATE it answers, on
// relays.cpu_cores cores, and sends the CREATED when that time is over.
// Waiting handshakes are served round-robin across links, in order within
// a link: the real relay answers CREATEs on each link's reader goroutine
// and Go's scheduler shares the cores among them. So a flood on some
// links delays an honest CREATE on another link by at most one handshake
// per busy link, divided among the cores. A link may have at most
// maxPendingCreates handshakes waiting; beyond that its CREATEs are
// refused (the real relay would stop reading the link; a refusal keeps
// the simulator's memory bounded just the same).
//
// CREATE rate limit. As in relay.handleCreate, CREATEs arriving on links
// from clients (not relays) pass a token bucket per remote address of
// relay.DefaultCreateRate per second, burst relay.DefaultCreateBurst; a
// refused CREATE is answered with DESTROY(RESOURCELIMIT) and the rest of
// its cells are dropped.
//
// A CREATE flood. Attackers nodes, each with its own address, dial the
// target and send Rate complete hybrid CREATEs per second each. An
// attacker makes one real CREATE message (a ClientCircuit handshake
// against the target's onion key) and sends it again and again under
// fresh circuit IDs: a relay keeps no replay cache for CREATEs, so every
// copy costs it a full circuit.AcceptCreate and costs the attacker
// nothing. It destroys each circuit as soon as its CREATED arrives, so
// the circuit table never fills and every CREATE costs a handshake.

// procState is one relay process's CPU and CREATE limits.
type procState struct {
	busy    int // cores doing a handshake
	ring    []*hsQueue
	queues  map[*rlink]*hsQueue // lookup only; ring holds the order
	limits  map[netip.Addr]*rate.Limiter
	refused map[linkCirc]int // continuation cells of refused CREATEs still to drop
}

type linkCirc struct {
	link uint64
	id   uint32
}

// hsQueue is the handshakes waiting on one link.
type hsQueue struct {
	rl   *rlink
	jobs []hsJob
}

type hsJob struct {
	reply   circuit.Cell
	arrived time.Time
}

func (w *World) procState(p *relayProc) *procState {
	st := w.attacks()
	ps := st.procs[p]
	if ps == nil {
		ps = &procState{queues: map[*rlink]*hsQueue{}, limits: map[netip.Addr]*rate.Limiter{}, refused: map[linkCirc]int{}}
		st.procs[p] = ps
	}
	return ps
}

// createGate is called for every CREATE cell before the relay reads it.
// It returns true if it took care of the cell: a continuation of a
// refused CREATE (dropped), or a first cell refused by the CREATE rate
// limit or a full handshake backlog (answered with DESTROY).
func (p *relayProc) createGate(rl *rlink, c *circuit.Cell) bool {
	if rl.pending[c.CircID] != nil {
		return false
	}
	w := p.r.w
	ps := w.procState(p)
	key := linkCirc{rl.l.ID, c.CircID}
	if n := ps.refused[key]; n > 0 {
		if n == 1 {
			delete(ps.refused, key)
		} else {
			ps.refused[key] = n - 1
		}
		return true
	}
	peer := rl.l.Peer(p.r.node)
	ok := true
	if q := ps.queues[rl]; q != nil && len(q.jobs) >= maxPendingCreates {
		ok = false
	}
	if ok && rl.peer == nil {
		lim := ps.limits[peer.Addr]
		if lim == nil {
			lim = rate.NewLimiter(rate.Limit(relay.DefaultCreateRate), relay.DefaultCreateBurst)
			ps.limits[peer.Addr] = lim
		}
		ok = lim.AllowN(w.sim.Now(), 1)
	}
	if ok {
		return false
	}
	if f := w.attacks().flooders[peer.ID]; f != nil {
		f.stats().Refused++
	}
	if n := circuit.CreateContinuations(&c.Payload); n > 0 {
		ps.refused[key] = n
	}
	d := circuit.DestroyCell(c.CircID, circuit.DestroyResourceLimit)
	p.send(rl, &d)
	return true
}

// forgetRefused drops what createGate keeps about refused CREATEs on rl,
// which has closed: their continuations will never come.
func (p *relayProc) forgetRefused(rl *rlink) {
	if p.r.w.attack == nil {
		return
	}
	ps := p.r.w.attack.procs[p]
	if ps == nil {
		return
	}
	for k := range ps.refused {
		if k.link == rl.l.ID {
			delete(ps.refused, k)
		}
	}
}

// handshakeDone sends reply, the CREATED of a handshake just answered on
// rl, once the relay's CPU has done the handshake.
func (p *relayProc) handshakeDone(rl *rlink, reply *circuit.Cell) {
	w := p.r.w
	if w.sc.Relays.HandshakeCPU.Duration <= 0 {
		p.send(rl, reply)
		return
	}
	ps := w.procState(p)
	q := ps.queues[rl]
	if q == nil {
		q = &hsQueue{rl: rl}
		ps.queues[rl] = q
		ps.ring = append(ps.ring, q)
	}
	q.jobs = append(q.jobs, hsJob{reply: *reply, arrived: w.sim.Now()})
	p.runCPU(ps)
}

// runCPU starts waiting handshakes while cores are free.
func (p *relayProc) runCPU(ps *procState) {
	w := p.r.w
	for ps.busy < w.sc.Relays.CPUCores && len(ps.ring) > 0 {
		q := ps.ring[0]
		job := q.jobs[0]
		q.jobs = q.jobs[1:]
		ps.ring = ps.ring[1:]
		if len(q.jobs) > 0 {
			ps.ring = append(ps.ring, q)
		} else {
			delete(ps.queues, q.rl)
		}
		ps.busy++
		rl := q.rl
		w.sim.After(w.sc.Relays.HandshakeCPU.Duration, func() {
			ps.busy--
			if p.dead {
				return
			}
			w.handshakeFinished(p, rl, job.arrived)
			if !rl.l.Closed() {
				p.send(rl, &job.reply)
			}
			p.runCPU(ps)
		})
	}
}

// handshakeFinished counts a finished handshake for the floods.
func (w *World) handshakeFinished(p *relayProc, rl *rlink, arrived time.Time) {
	st := w.attacks()
	if len(st.floods) == 0 {
		return
	}
	peer := rl.l.Peer(p.r.node)
	if f := st.flooders[peer.ID]; f != nil {
		f.stats().Answered++
		return
	}
	for _, f := range st.floods {
		if f.target == p.r && f.active() {
			f.stats().HandshakeWait = append(f.stats().HandshakeWait, w.sim.Now().Sub(arrived).Seconds())
		}
	}
}

// noteBuild is called when a client finishes building a circuit on path
// in d.
func (w *World) noteBuild(path []*directory.RouterStatus, d time.Duration) {
	if w.attack == nil {
		return
	}
	for _, f := range w.attack.floods {
		if !slices.ContainsFunc(path, func(r *directory.RouterStatus) bool { return r.ID == f.target.id }) {
			continue
		}
		switch {
		case w.sim.Now().Before(f.start):
			f.stats().BuildBefore = append(f.stats().BuildBefore, d.Seconds())
		case f.active():
			f.stats().BuildDuring = append(f.stats().BuildDuring, d.Seconds())
		}
	}
}

// flood is one create-flood event.
type flood struct {
	w          *World
	ev         scenario.Event
	target     *Relay
	idx        int // in w.m.Adversary.Floods
	start, end time.Time
	attackers  []*flooder
}

func (f *flood) stats() *report.FloodStats { return &f.w.m.Adversary.Floods[f.idx] }

// active reports whether the flood is on.
func (f *flood) active() bool {
	now := f.w.sim.Now()
	return !now.Before(f.start) && (f.end.IsZero() || now.Before(f.end))
}

// flooder is one attacking node.
type flooder struct {
	f        *flood
	node     *simnet.Node
	rand     *simnet.Rand
	link     *simnet.Link
	payloads [][circuit.PayloadSize]byte
	nextID   uint32
}

var _ simnet.Handler = (*flooder)(nil)

// addFlood sets up a create-flood event: its target and attacking nodes.
func (w *World) addFlood(ev scenario.Event) *flood {
	st := w.attacks()
	f := &flood{w: w, ev: ev, idx: len(w.m.Adversary.Floods), start: simnet.Epoch.Add(ev.At.Duration)}
	if ev.For.Duration > 0 {
		f.end = f.start.Add(ev.For.Duration)
	}
	for _, r := range w.relays {
		if ev.Target != "" {
			if r.name == ev.Target {
				f.target = r
			}
		} else if r.behaviour == "" && (f.target == nil || r.node.UpRate > f.target.node.UpRate) {
			f.target = r
		}
	}
	w.m.Adversary.Floods = append(w.m.Adversary.Floods, report.FloodStats{Target: f.target.name, Attackers: ev.Attackers, Rate: ev.Rate})
	// Enough uplink for the CREATEs (three cells each) with room to spare.
	up := max(100e6/8, 4*ev.Rate*circuit.CellSize*3)
	for i := range ev.Attackers {
		k := len(st.flooders)
		name := fmt.Sprintf("flood%d-%d", f.idx, i)
		a := &flooder{f: f, rand: w.sim.Stream(name)}
		addr := netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})
		a.node = w.net.AddNode(name, w.pickRegion(nil, w.rng), addr, up, a)
		st.flooders[a.node.ID] = f
		f.attackers = append(f.attackers, a)
	}
	st.floods = append(st.floods, f)
	return f
}

// begin starts the flood: every attacker dials the target.
func (f *flood) begin() {
	for _, a := range f.attackers {
		f.w.net.Dial(a.node, f.target.node, func(l *simnet.Link, err error) {
			if err != nil || !f.active() {
				return
			}
			rs := f.w.cons.Relay(f.target.id)
			if rs == nil {
				l.Close(a.node)
				return
			}
			// One real CREATE, replayed.
			cc := circuit.NewClientCircuit(f.w.sim.Now)
			payloads, err := cc.Create(a.rand, client.HopSpec(rs))
			if err != nil {
				l.Close(a.node)
				return
			}
			a.link, a.payloads = l, payloads
			interval := time.Duration(float64(time.Second) / f.ev.Rate)
			f.w.sim.After(time.Duration(a.rand.Uint64()%uint64(max(interval, 1))), func() { a.tick(interval) })
		})
	}
	f.w.event("CREATE flood on %s: %d attackers, %.0f CREATEs/s each", f.target.name, f.ev.Attackers, f.ev.Rate)
	if !f.end.IsZero() {
		f.w.sim.At(f.end, func() { f.w.event("CREATE flood on %s ends", f.target.name) })
	}
}

// tick sends one CREATE and arms the next.
func (a *flooder) tick(interval time.Duration) {
	if a.link == nil || a.link.Closed() || !a.f.active() {
		if a.link != nil && !a.link.Closed() {
			a.link.Close(a.node)
		}
		return
	}
	a.nextID = (a.nextID + 1) &^ circuit.CircIDHighBit
	if a.nextID == 0 {
		a.nextID = 1
	}
	id := a.nextID | circuit.CircIDHighBit
	for i := range a.payloads {
		c := circuit.Cell{CircID: id, Cmd: circuit.CmdCreate, Payload: a.payloads[i]}
		if a.link.Send(a.node, &c) != nil {
			return
		}
	}
	a.f.stats().Sent++
	a.f.w.sim.After(interval, func() { a.tick(interval) })
}

// Accepted: attackers accept no links.
func (a *flooder) Accepted(l *simnet.Link) { l.Close(a.node) }

// Cell destroys each circuit the target created, so that the next CREATE
// costs it another handshake rather than a cheap "table full" refusal.
func (a *flooder) Cell(l *simnet.Link, c *circuit.Cell) {
	if c.Cmd == circuit.CmdCreated {
		d := circuit.DestroyCell(c.CircID, circuit.DestroyRequested)
		l.Send(a.node, &d)
	}
}

// Closed: the target went away; the attacker stops.
func (a *flooder) Closed(l *simnet.Link) {
	if a.link == l {
		a.link = nil
	}
}
