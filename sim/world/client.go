package world

import (
	"sort"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/sim/scenario"
	"github.com/veilnet/veil/sim/simnet"
)

// The client driver: a small circuit manager around circuit.ClientCircuit,
// doing what package client does for the daemon. It keeps a guard sample
// (package client's guard code), builds three-hop circuits with hybrid
// handshakes, learns the build timeout with client.BuildTimeout, reuses a
// circuit for streams until MaxDirtiness after its first stream, keeps one
// clean circuit ready (preemptive building), and opens streams for the
// traffic model's fetches.

// Client parameters.
const (
	// MaxDirtiness is how long a circuit takes new streams after its
	// first (Tor's MaxCircuitDirtiness).
	MaxDirtiness = 10 * time.Minute
	// relaunchDelay is the pause after a failed build before the next.
	relaunchDelay = 500 * time.Millisecond
	// maxBuilding bounds the circuits a client builds at once (a client
	// standing for many users needs several when their sessions start
	// together).
	maxBuilding = 4
)

// Client is one simulated client.
type Client struct {
	w      *World
	name   string
	group  *scenario.Clients
	node   *simnet.Node
	rand   *simnet.Rand
	guards client.GuardSet
	cbt    *client.BuildTimeout
	links  map[simnet.NodeID]*clink // links to guards (lookup only)
	circs  []*ccirc                 // open circuits, oldest first
	// building is the number of circuits being built.
	building int
	waiting  []*fetch // fetches waiting for a circuit
	relaunch *simnet.Timer
}

var _ simnet.Handler = (*Client)(nil)

type clink struct {
	l       *simnet.Link // nil while dialing
	guard   *Relay
	circs   map[uint32]*ccirc
	nextID  uint32
	waiting []*ccirc // circuits waiting for the link
}

type ccirc struct {
	cc      *circuit.ClientCircuit
	path    []*directory.RouterStatus
	link    *clink
	id      uint32
	started time.Time
	built   bool
	dead    bool
	dirty   time.Time      // when the first stream was attached; zero: clean
	pathUse client.PathUse // path bias, as the real client keeps it
	iso     int            // the session whose streams it carries, once dirty
	timer   *simnet.Timer
	acts    circuit.ClientActions
	acts2   circuit.ClientActions // for calls made while acts is being applied
	fetches []*fetch
}

func (c *Client) now() time.Time { return c.w.sim.Now() }

// newConsensus updates the guard sample (client.UpdateGuards).
func (c *Client) newConsensus() {
	c.guards = client.UpdateGuards(c.guards, c.w.cons, c.now(), c.rand)
}

// Accepted: clients accept no links.
func (c *Client) Accepted(l *simnet.Link) { l.Close(c.node) }

// Closed kills the circuits of a link that closed.
func (c *Client) Closed(l *simnet.Link) {
	cl, _ := l.State[0].(*clink)
	if cl == nil {
		return
	}
	delete(c.links, cl.guard.node.ID)
	for _, id := range sortedCircIDs(cl.circs) {
		c.kill(cl.circs[id], "link closed", false)
	}
}

func sortedCircIDs(m map[uint32]*ccirc) []uint32 {
	ids := make([]uint32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Cell handles a cell from a guard (client.handleCell).
func (c *Client) Cell(l *simnet.Link, cell *circuit.Cell) {
	cl := l.State[0].(*clink)
	circ := cl.circs[cell.CircID]
	if circ == nil || circ.dead {
		return
	}
	var err error
	switch cell.Cmd {
	case circuit.CmdCreated:
		if err = circ.cc.HandleCreated(&cell.Payload); err == nil {
			c.extendNext(circ)
		}
	case circuit.CmdRelay:
		circ.acts.Reset()
		err = circ.cc.HandleBackward(&cell.Payload, &circ.acts)
		if v := c.w.vopr; v != nil {
			v.clientCell(c, circ, err)
		}
		if err == nil {
			if circ.pathUse.Answered() {
				c.notePath(circ, true)
			}
			c.apply(circ)
		}
	case circuit.CmdDestroy:
		c.kill(circ, "destroyed", false)
		return
	default:
		err = circuit.ErrProtocol
	}
	if err != nil {
		c.kill(circ, "protocol error", true)
	}
}

// launch starts building a circuit.
func (c *Client) launch() {
	port := uint16(c.group.Port)
	path := c.choosePath(port)
	if path == nil {
		c.w.m.Error("build: no path")
		c.scheduleRelaunch()
		return
	}
	circ := &ccirc{cc: circuit.NewClientCircuit(c.w.sim.Now), path: path, started: c.now()}
	c.building++
	c.w.m.CircuitsLaunched++
	c.circs = append(c.circs, circ)
	circ.timer = c.w.sim.After(c.cbt.Timeout(), func() {
		if !circ.built && !circ.dead {
			c.cbt.ObserveTimeout()
			c.kill(circ, "timeout", true)
		}
	})
	c.linkTo(c.w.byID[path[0].ID], circ)
}

func (c *Client) scheduleRelaunch() {
	if c.relaunch != nil && c.relaunch.Stop() {
		c.relaunch = nil
	}
	c.relaunch = c.w.sim.After(relaunchDelay, func() {
		c.relaunch = nil
		if c.needBuild() {
			c.launch()
		}
	})
}

// needBuild reports whether fetches wait for more circuits than are being
// built (and the client may build another).
func (c *Client) needBuild() bool {
	return len(c.waiting) > c.building && c.building < maxBuilding
}

// linkTo gets circ a link to guard g, dialing one if needed.
func (c *Client) linkTo(g *Relay, circ *ccirc) {
	if cl := c.links[g.node.ID]; cl != nil {
		if cl.l == nil {
			cl.waiting = append(cl.waiting, circ)
		} else {
			c.create(circ, cl)
		}
		return
	}
	cl := &clink{guard: g, circs: map[uint32]*ccirc{}, waiting: []*ccirc{circ}}
	c.links[g.node.ID] = cl
	c.w.net.Dial(c.node, g.node, func(l *simnet.Link, err error) {
		waiting := cl.waiting
		cl.waiting = nil
		if err != nil {
			delete(c.links, g.node.ID)
			c.guards.MarkFailed(g.id, c.now())
			for _, circ := range waiting {
				c.kill(circ, "guard unreachable", false)
			}
			return
		}
		c.guards.MarkConnected(g.id, c.now())
		cl.l = l
		l.State[0] = cl
		for _, circ := range waiting {
			if !circ.dead {
				c.create(circ, cl)
			}
		}
	})
}

// create sends the CREATE cells of circ's first hop on cl.
func (c *Client) create(circ *ccirc, cl *clink) {
	cl.nextID = (cl.nextID + 1) &^ circuit.CircIDHighBit
	if cl.nextID == 0 {
		cl.nextID = 1
	}
	circ.link, circ.id = cl, cl.nextID|circuit.CircIDHighBit
	cl.circs[circ.id] = circ
	payloads, err := circ.cc.Create(c.rand, client.HopSpec(circ.path[0]))
	if err != nil {
		c.kill(circ, "handshake", false)
		return
	}
	for i := range payloads {
		cell := circuit.Cell{CircID: circ.id, Cmd: circuit.CmdCreate, Payload: payloads[i]}
		cl.l.Send(c.node, &cell)
	}
}

// extendNext extends circ by one hop, or finishes the build.
func (c *Client) extendNext(circ *ccirc) {
	if h := circ.cc.Hops(); h < len(circ.path) {
		circ.acts2.Reset()
		if err := circ.cc.Extend(c.rand, client.HopSpec(circ.path[h]), &circ.acts2); err != nil {
			c.kill(circ, "handshake", true)
			return
		}
		c.sendAll(circ, circ.acts2.ToLink)
		return
	}
	circ.built = true
	circ.timer.Stop()
	c.building--
	d := c.now().Sub(circ.started)
	c.cbt.Observe(d)
	c.w.m.CircuitsBuilt++
	c.w.m.BuildSeconds = append(c.w.m.BuildSeconds, d.Seconds())
	c.w.noteBuild(circ.path, d) // flood.go
	waiting := c.waiting
	c.waiting = nil
	for _, f := range waiting {
		c.attach(f)
	}
	c.maintain()
}

func (c *Client) sendAll(circ *ccirc, cells []circuit.Cell) {
	if circ.link == nil || circ.link.l == nil {
		return
	}
	for i := range cells {
		cells[i].CircID = circ.id
		if circ.link.l.Send(c.node, &cells[i]) != nil {
			return
		}
	}
}

// apply carries out circ.acts (client.apply).
func (c *Client) apply(circ *ccirc) {
	a := &circ.acts
	c.sendAll(circ, a.ToLink)
	if a.Extended {
		c.extendNext(circ)
	}
	for _, id := range a.Connected {
		if f := circ.fetch(id); f != nil {
			c.connected(circ, f)
		}
	}
	// The application reads at once: every cell is consumed.
	var consumed [4]struct {
		id uint16
		n  int
	}
	used := consumed[:0]
	for _, d := range a.Data {
		f := circ.fetch(d.StreamID)
		if f == nil {
			continue
		}
		i := 0
		for i < len(used) && used[i].id != d.StreamID {
			i++
		}
		if i == len(used) {
			used = append(used, struct {
				id uint16
				n  int
			}{d.StreamID, 0})
		}
		used[i].n++
		if v := c.w.vopr; v != nil {
			v.checkData(f, d.Data)
		}
		c.received(f, len(d.Data))
	}
	for _, u := range used {
		circ.acts2.Reset()
		if err := circ.cc.StreamConsumed(u.id, u.n, &circ.acts2); err != nil {
			c.kill(circ, "protocol error", true)
			return
		}
		c.sendAll(circ, circ.acts2.ToLink)
	}
	for _, e := range a.Ends {
		if f := circ.fetch(e.StreamID); f != nil {
			c.ended(f, e.Reason)
		}
	}
}

// notePath feeds the real client's path-bias rule (client.GuardSet.NoteCircuit)
// with a circuit's outcome, as client/circuits.go does; a guard it
// disables is replaced as the real client does.
func (c *Client) notePath(circ *ccirc, ok bool) {
	if c.guards.NoteCircuit(circ.path[0].ID, ok, c.now()) {
		c.w.m.Error("guard disabled by path bias")
		c.guards = client.UpdateGuards(c.guards, c.w.cons, c.now(), c.rand)
	}
}

// kill tears circ down; cause names the failure for the metrics.
func (c *Client) kill(circ *ccirc, cause string, sendDestroy bool) {
	if circ.dead {
		return
	}
	circ.dead = true
	circ.timer.Stop()
	if count, ok := circ.pathUse.Closed(circ.cc.Hops(), len(circ.path)); count {
		c.notePath(circ, ok)
	}
	if !circ.built {
		c.building--
		c.w.m.Error("build: " + cause)
	}
	fetches := circ.fetches
	circ.fetches = nil
	for _, f := range fetches {
		c.fail(f, "stream: circuit "+cause)
	}
	if cl := circ.link; cl != nil {
		delete(cl.circs, circ.id)
		if sendDestroy && cl.l != nil && !cl.l.Closed() {
			d := circuit.DestroyCell(circ.id, circuit.DestroyRequested)
			cl.l.Send(c.node, &d)
		}
	}
	for i, x := range c.circs {
		if x == circ {
			c.circs = append(c.circs[:i], c.circs[i+1:]...)
			break
		}
	}
	if c.needBuild() {
		c.scheduleRelaunch()
	}
}

// usable returns a built circuit that takes new streams of session iso,
// preferring the one already in use.
func (c *Client) usable(iso int) *ccirc {
	var clean *ccirc
	for _, circ := range c.circs {
		if !circ.built || circ.dead || circ.cc.StreamCount() >= circuit.MaxStreamsPerCircuit/2 {
			continue
		}
		if circ.dirty.IsZero() {
			if clean == nil {
				clean = circ
			}
			continue
		}
		if circ.iso == iso && c.now().Sub(circ.dirty) < MaxDirtiness {
			return circ
		}
	}
	return clean
}

// maintain closes idle circuits past their dirtiness and keeps one clean
// circuit built or building.
func (c *Client) maintain() {
	hasClean := false
	for _, circ := range append([]*ccirc(nil), c.circs...) {
		switch {
		case !circ.built:
			hasClean = true
		case circ.dirty.IsZero():
			hasClean = true
		case len(circ.fetches) == 0 && c.now().Sub(circ.dirty) >= MaxDirtiness:
			c.kill(circ, "", true)
		}
	}
	if !hasClean && c.building == 0 && c.relaunch == nil {
		c.launch()
	}
}
