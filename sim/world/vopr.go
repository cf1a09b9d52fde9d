package world

import (
	"errors"
	"fmt"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/relay"
	"github.com/veilnet/veil/sim/scenario"
)

// Randomized fault runs in the style of TigerBeetle's VOPR: a scenario
// drawn from a seed (vopr_gen.go) runs with the invariant checks below
// switched on, and a failing seed is a one-line reproduction
// (`veil sim --vopr 1 --seed S`). The checks hook into the driver at a few
// points (calls guarded by w.vopr != nil, so ordinary runs pay one nil
// test); they read the driver's state and never change what it does,
// except the deliberate bugs of the self-tests.
//
// The invariants, each named in its violations:
//
//   - "content": no stream delivers bytes other than those sent. A client
//     asks for "GET <n> <key>"; the exit serves bytes of a PRF of (server,
//     key, offset) and the client checks every byte it is given, and that
//     no stream gives more bytes than were asked for.
//   - "after-detect": no circuit outlives a detected modification. Once a
//     hop's layer check fails on a circuit (circuit.ErrAuth or
//     ErrBadFlag), that hop accepts no further cell of it, and its
//     neighbours accept no more cells from it than it had sent by then.
//   - "teardown": within TeardownBound of a detection, every hop of the
//     circuit and its client have torn it down.
//   - "memory": no relay holds more cells than the real relay allows: one
//     circuit's cells waiting on one link stay within relay/sched.go's
//     maxCircQueue (circuit.MaxCwnd + 512), and all of a relay's queued
//     cells within relay.DefaultMaxMemory. In the simulator a relay's
//     queued cells are those on its uplink that have not left yet.
//   - "open-at-end": the clients stop VOPRDrain before the end (every
//     fetch abandoned, every circuit closed, as a client shutting down);
//     at the end no relay, exit or client holds a circuit, a stream, a
//     half-assembled CREATE or a circuit waiting for a link.

// VOPRDrain is the virtual time between the clients' stop and the end of
// a VOPR run: two extend timeouts, so that a circuit stuck waiting for a
// link has timed out too.
const VOPRDrain = 2 * extendTimeout

// TeardownBound is how long after a detected modification every hop and
// the client may still hold the circuit. The DESTROY crosses at most
// three links, each in its latency (at most 150 ms in generated
// scenarios, plus jitter), a retransmission timeout if lost, and the
// sender's uplink backlog (bounded by the "memory" check); 60 s is far
// above that and equal to VOPRDrain.
const TeardownBound = 60 * time.Second

// voprMaxCircQueue is relay/sched.go's maxCircQueue (keep in step).
const voprMaxCircQueue = circuit.MaxCwnd + 512

// maxViolations bounds the violations one run records of each invariant.
const maxViolations = 20

// VOPRBug is a deliberate bug for the checker's self-tests.
type VOPRBug int

const (
	NoBug VOPRBug = iota
	// BugCorruptByte makes every exit serve byte 1000 of each response
	// with one bit flipped.
	BugCorruptByte
	// BugSkipTeardown makes a relay whose layer check fails keep the
	// circuit instead of destroying it.
	BugSkipTeardown
)

// Violation is one broken invariant.
type Violation struct {
	Invariant string
	Seed      uint64
	At        time.Duration // virtual time since the start
	What      string
}

func (v Violation) String() string {
	return fmt.Sprintf("seed %d at %v: %s: %s", v.Seed, v.At, v.Invariant, v.What)
}

// VOPRStats is what the checks looked at in one run.
type VOPRStats struct {
	Circuits     int    // circuits followed (one per client or flood circuit)
	Fetches      int    // fetches whose content was checked
	BytesChecked uint64 // stream bytes compared with what the server sent
	Detections   int    // circuits on which a hop or the client detected a modification
	PeakCells    int    // largest uplink backlog of any relay, cells
	PeakCircQ    int    // largest backlog of one circuit on one link, cells
}

// vopr is the checker's state (maps for lookup only; circs keeps order).
type vopr struct {
	w       *World
	bug     VOPRBug
	stopped bool
	nextKey uint64
	buf     [64 << 10]byte
	circs   []*vCirc
	hops    map[*rcirc]*vHop
	byC     map[*ccirc]*vCirc
	up      map[*Relay]*vUplink
	viol    []Violation
	stats   VOPRStats
}

// vCirc is one circuit end to end: its client (nil for a flood's) and
// its hops in path order.
type vCirc struct {
	cc       *ccirc
	hops     []*vHop
	clientIn int // backward RELAY cells the client accepted
	detected bool
	detPos   int // 0: the client; i: hops[i-1]
	fwdLimit int // forward cells the detecting hop had sent
	bwdLimit int // backward cells it had sent
}

// vHop is a circuit at one relay.
type vHop struct {
	vc               *vCirc
	pos              int
	p                *relayProc
	e                *rcirc
	fwdIn, bwdIn     int        // RELAY cells accepted from each side
	fwdSent, bwdSent int        // RELAY cells sent on to each side
	q                [2][]int64 // departure times of queued cells: forward, backward
}

// vUplink shadows a relay's uplink as simnet computes it.
type vUplink struct {
	p    *relayProc
	free int64 // when the last queued cell leaves
}

// enableVOPR switches the checks on; call it before the clock runs.
// stop is when the clients stop.
func (w *World) enableVOPR(bug VOPRBug, stop time.Duration) *vopr {
	v := &vopr{w: w, bug: bug, hops: map[*rcirc]*vHop{}, byC: map[*ccirc]*vCirc{}, up: map[*Relay]*vUplink{}}
	w.vopr = v
	w.sim.After(stop, v.stop)
	return v
}

func (v *vopr) violate(inv, format string, a ...any) {
	n := 0
	for _, x := range v.viol {
		if x.Invariant == inv {
			n++
		}
	}
	if n >= maxViolations {
		return
	}
	v.viol = append(v.viol, Violation{Invariant: inv, Seed: v.w.sim.Seed(), At: v.w.sim.Elapsed(), What: fmt.Sprintf(format, a...)})
}

// RunVOPR runs the scenario drawn from seed with the checks on; see
// RunVOPRScenario.
func RunVOPR(seed uint64, bug VOPRBug) (*VOPRResult, error) {
	g, err := VOPRScenario(seed)
	if err != nil {
		return nil, err
	}
	r, err := RunVOPRScenario(g.Scenario, seed, bug)
	if r != nil {
		r.Gen = g
	}
	return r, err
}

// VOPRResult is one checked run.
type VOPRResult struct {
	Seed       uint64
	Gen        *VOPRGen // nil for a scenario not drawn by VOPRScenario
	Violations []Violation
	Stats      VOPRStats
	Metrics    []byte // metrics.json: byte-identical for a seed
}

// RunVOPRScenario runs sc for seed with the checks on: the clients stop
// VOPRDrain before sc's end, and the end-of-run checks follow.
func RunVOPRScenario(sc *scenario.Scenario, seed uint64, bug VOPRBug) (*VOPRResult, error) {
	if sc.Duration.Duration <= VOPRDrain {
		return nil, fmt.Errorf("vopr: scenario %q lasts %v, not more than the drain (%v)", sc.Name, sc.Duration.Duration, VOPRDrain)
	}
	w, err := New(sc, seed)
	if err != nil {
		return nil, err
	}
	v := w.enableVOPR(bug, sc.Duration.Duration-VOPRDrain)
	w.RunUntil(w.End())
	v.checkEnd()
	m, err := w.Metrics().JSON()
	if err != nil {
		return nil, err
	}
	return &VOPRResult{Seed: seed, Violations: v.viol, Stats: v.stats, Metrics: m}, nil
}

// stop makes the clients stop: no new fetch, every fetch abandoned, every
// circuit closed (with DESTROY).
func (v *vopr) stop() {
	v.stopped = true
	for _, c := range v.w.clients {
		for len(c.waiting) > 0 {
			c.fail(c.waiting[0], "stopped")
		}
		for len(c.circs) > 0 {
			c.kill(c.circs[0], "stopped", true)
		}
		if c.relaunch != nil {
			c.relaunch.Stop()
			c.relaunch = nil
		}
	}
}

// --- content ---

// fetchKey gives f its content key and returns it.
func (v *vopr) fetchKey(f *fetch) uint64 {
	v.nextKey++
	f.key = mix64(v.w.sim.Seed(), v.nextKey) | 1
	v.stats.Fetches++
	return f.key
}

// serverKey binds content to the server that serves it.
func serverKey(s *server) uint64 {
	h := uint64(14695981039346656037) // FNV-1a
	for i := 0; i < len(s.name); i++ {
		h = (h ^ uint64(s.name[i])) * 1099511628211
	}
	return h
}

// mix64 is SplitMix64's finalizer of k and x: the content PRF. It needs
// to be cheap and to differ between keys and offsets, not to be secret.
func mix64(k, x uint64) uint64 {
	z := k ^ (x * 0x9e3779b97f4a7c15)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// fillContent writes the content of stream key from offset off into dst.
func fillContent(dst []byte, key uint64, off int) {
	for i := 0; i < len(dst); {
		o := off + i
		word := mix64(key, uint64(o/8))
		for b := o % 8; b < 8 && i < len(dst); b++ {
			dst[i] = byte(word >> (8 * b))
			i++
		}
	}
}

// content is what the exit sends of stream key (a client's key bound to
// server srv), n bytes from off; the slice is the checker's buffer.
func (v *vopr) content(srv *server, key uint64, off, n int) []byte {
	b := v.buf[:min(n, len(v.buf))]
	fillContent(b, key^serverKey(srv), off)
	if v.bug == BugCorruptByte && off <= 1000 && 1000 < off+len(b) {
		b[1000-off] ^= 0x01
	}
	return b
}

// checkData checks the bytes data given to fetch f by its stream.
func (v *vopr) checkData(f *fetch, data []byte) {
	if f.key == 0 {
		return
	}
	if f.done || f.received+len(data) > f.size {
		v.violate("content", "client %s: stream %d of a %d-byte fetch delivered %d bytes past its end (done %v)",
			f.c.name, f.id, f.size, f.received+len(data)-f.size, f.done)
		f.key = 0
		return
	}
	var want [512]byte
	key := f.key ^ serverKey(f.server)
	for i := 0; i < len(data); i += len(want) {
		chunk := data[i:min(i+len(want), len(data))]
		fillContent(want[:len(chunk)], key, f.received+i)
		for j := range chunk {
			if chunk[j] != want[j] {
				v.violate("content", "client %s: stream %d from %s delivered %#02x at offset %d; the server sent %#02x",
					f.c.name, f.id, f.server.name, chunk[j], f.received+i+j, want[j])
				f.key = 0
				return
			}
		}
	}
	v.stats.BytesChecked += uint64(len(data))
}

// --- circuits: detection and teardown ---

// created follows circuit e, just accepted by p on rl as id, from its
// upstream side (the client's or the previous relay's circuit).
func (v *vopr) created(p *relayProc, rl *rlink, id uint32, e *rcirc) {
	var vc *vCirc
	switch up := rl.l.State[1-rl.side].(type) {
	case *clink:
		if cc := up.circs[id]; cc != nil {
			vc = v.byC[cc]
			if vc == nil {
				vc = &vCirc{cc: cc}
				v.byC[cc] = vc
			}
		}
	case *rlink:
		if cs, ok := up.circs[id]; ok && !cs.prev {
			if h := v.hops[cs.e]; h != nil {
				vc = h.vc
			}
		}
	}
	if vc == nil { // a flood's circuit, or one whose upstream is gone
		vc = &vCirc{}
	}
	if len(vc.hops) == 0 {
		v.circs = append(v.circs, vc)
		v.stats.Circuits++
	}
	h := &vHop{vc: vc, pos: len(vc.hops) + 1, p: p, e: e}
	vc.hops = append(vc.hops, h)
	v.hops[e] = h
}

func isDetection(err error) bool {
	return errors.Is(err, circuit.ErrAuth) || errors.Is(err, circuit.ErrBadFlag)
}

// relayCell is told the result of p's circuit call on a RELAY cell of e
// from the previous hop (forward) or the next. It reports whether the
// relay should skip the teardown (BugSkipTeardown).
func (v *vopr) relayCell(p *relayProc, e *rcirc, forward bool, err error) (skipTeardown bool) {
	h := v.hops[e]
	if h == nil {
		return false
	}
	vc := h.vc
	if err != nil {
		if isDetection(err) {
			v.detect(vc, h.pos, fmt.Sprintf("relay %s", p.r.name))
			return v.bug == BugSkipTeardown
		}
		return false
	}
	if forward {
		h.fwdIn++
	} else {
		h.bwdIn++
	}
	if !vc.detected {
		return false
	}
	switch {
	case h.pos == vc.detPos:
		v.violate("after-detect", "relay %s accepted a %s cell of a circuit after detecting a modification on it",
			p.r.name, dirName(forward))
	case forward && h.pos == vc.detPos+1 && vc.detPos > 0 && h.fwdIn > vc.fwdLimit:
		v.violate("after-detect", "relay %s (hop %d) accepted forward cell %d; hop %d had sent %d when it detected a modification",
			p.r.name, h.pos, h.fwdIn, vc.detPos, vc.fwdLimit)
	case !forward && h.pos == vc.detPos-1 && h.bwdIn > vc.bwdLimit:
		v.violate("after-detect", "relay %s (hop %d) accepted backward cell %d; hop %d had sent %d when it detected a modification",
			p.r.name, h.pos, h.bwdIn, vc.detPos, vc.bwdLimit)
	}
	return false
}

func dirName(forward bool) string {
	if forward {
		return "forward"
	}
	return "backward"
}

// clientCell is told the result of the client's HandleBackward on circ.
func (v *vopr) clientCell(c *Client, circ *ccirc, err error) {
	vc := v.byC[circ]
	if vc == nil {
		return
	}
	if err != nil {
		if isDetection(err) {
			v.detect(vc, 0, "client "+c.name)
		}
		return
	}
	vc.clientIn++
	if vc.detected && (vc.detPos == 0 || (vc.detPos == 1 && vc.clientIn > vc.bwdLimit)) {
		v.violate("after-detect", "client %s accepted backward cell %d after hop %d detected a modification (it had sent %d)",
			c.name, vc.clientIn, vc.detPos, vc.bwdLimit)
	}
}

// detect records the first detected modification on vc, at position pos
// (0: the client), and checks the teardown TeardownBound later.
func (v *vopr) detect(vc *vCirc, pos int, who string) {
	if vc.detected {
		return
	}
	vc.detected, vc.detPos = true, pos
	if pos > 0 {
		h := vc.hops[pos-1]
		vc.fwdLimit, vc.bwdLimit = h.fwdSent, h.bwdSent
	}
	v.stats.Detections++
	at := v.w.sim.Elapsed()
	v.w.sim.After(TeardownBound, func() {
		for _, h := range vc.hops {
			if !h.e.dead && !h.p.dead {
				v.violate("teardown", "relay %s (hop %d) still holds a circuit on which %s detected a modification at %v",
					h.p.r.name, h.pos, who, at)
			}
		}
		if vc.cc != nil && !vc.cc.dead {
			v.violate("teardown", "the client still holds a circuit on which %s detected a modification at %v", who, at)
		}
	})
}

// --- memory ---

// sent is told of every cell p puts on rl (before simnet queues it): it
// shadows the relay's uplink, counts each circuit's queued cells, and
// counts the RELAY cells each hop sends on.
func (v *vopr) sent(p *relayProc, rl *rlink, c *circuit.Cell) {
	if rl.l.Closed() {
		return
	}
	now := int64(v.w.sim.Elapsed())
	u := v.up[p.r]
	if u == nil || u.p != p { // a restarted process starts with an idle uplink
		u = &vUplink{p: p, free: now}
		v.up[p.r] = u
	}
	var d int64
	if rate := p.r.node.UpRate; rate > 0 {
		d = int64(float64(circuit.CellSize) / rate * 1e9) // as simnet.Link.Send
	}
	u.free = max(now, u.free) + d
	if d > 0 {
		cells := int((u.free - now + d - 1) / d)
		if cells > v.stats.PeakCells {
			v.stats.PeakCells = cells
		}
		if int64(cells)*circuit.CellSize > relay.DefaultMaxMemory {
			v.violate("memory", "relay %s has %d cells queued, more than relay.DefaultMaxMemory", p.r.name, cells)
		}
	}
	if c.Cmd != circuit.CmdRelay {
		return
	}
	cs, ok := rl.circs[c.CircID]
	if !ok {
		return
	}
	h := v.hops[cs.e]
	if h == nil {
		return
	}
	dir := 0
	if cs.prev {
		dir = 1
		h.bwdSent++
	} else {
		h.fwdSent++
	}
	q := h.q[dir]
	i := 0
	for i < len(q) && q[i] <= now {
		i++
	}
	q = append(q[i:], u.free)
	h.q[dir] = q
	if len(q) > v.stats.PeakCircQ {
		v.stats.PeakCircQ = len(q)
	}
	if len(q) > voprMaxCircQueue {
		v.violate("memory", "relay %s has %d %s cells of one circuit queued (the relay's bound is %d)",
			p.r.name, len(q), dirName(dir == 0), voprMaxCircQueue)
	}
}

// --- the end ---

// checkEnd checks that nothing is left open after the drain.
func (v *vopr) checkEnd() {
	open := map[*Relay]int{} // lookup only
	for _, vc := range v.circs {
		for _, h := range vc.hops {
			if !h.e.dead && !h.p.dead && h.p.r.proc == h.p {
				open[h.p.r]++
			}
		}
	}
	for _, r := range v.w.relays {
		p := r.proc
		if p.dead {
			continue
		}
		pending, streams := 0, 0
		for _, l := range r.node.Links() {
			if rl, ok := l.State[l.Side(r.node)].(*rlink); ok {
				pending += len(rl.pending)
				for _, cs := range rl.circs {
					if cs.prev {
						streams += len(cs.e.streams)
					}
				}
			}
		}
		if n := open[r]; n > 0 || pending > 0 || streams > 0 || len(p.dials) > 0 {
			v.violate("open-at-end", "relay %s holds %d circuits, %d exit streams, %d half-assembled CREATEs and %d circuits waiting for links, %v after the clients stopped",
				r.name, n, streams, pending, len(p.dials), VOPRDrain)
		}
	}
	for _, c := range v.w.clients {
		streams := 0
		for _, circ := range c.circs {
			streams += circ.cc.StreamCount()
		}
		if len(c.circs) > 0 || len(c.waiting) > 0 || c.building > 0 {
			v.violate("open-at-end", "client %s holds %d circuits (%d streams, %d building) and %d waiting fetches",
				c.name, len(c.circs), streams, c.building, len(c.waiting))
		}
	}
}

// trafficStopped reports whether the clients have stopped (a VOPR run's
// drain): they start no fetch.
func (w *World) trafficStopped() bool { return w.vopr != nil && w.vopr.stopped }
