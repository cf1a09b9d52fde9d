package simnet

import (
	"errors"
	"math/bits"
	"net/netip"
	"time"
	"unsafe"

	"github.com/veilnet/veil/circuit"
)

// The network model.
//
//   - A node sits in a region; the one-way latency between two nodes is
//     the latency matrix's entry for their regions, fixed for a link when
//     it opens.
//   - A link is a reliable, ordered channel carrying whole 514-byte cells
//     (what TCP + Noise give veil, without the framing). A cell sent at t
//     leaves its sender's uplink at d = max(t, uplink free) + CellSize/rate
//     (a FIFO uplink shared by all of a node's links), and arrives at
//     d + latency + jitter, jitter uniform in [0, Jitter*latency). A lost
//     cell is retransmitted: it arrives one retransmission timeout
//     (max(200 ms, RTT)) later. Arrivals on one direction of a link never
//     overtake each other, so jitter and loss delay later cells too (head
//     of line blocking) but never reorder them.
//   - Opening a link takes two round trips (TCP, then the Noise
//     handshake). It fails after one round trip if the peer is down, and
//     after DialTimeout if a partition separates them.
//   - A crash closes every link of the node at once: cells in flight are
//     lost and each peer learns of the close one latency later. A
//     partition does the same to the links it cuts.
//
// Downlink bandwidth and round-robin scheduling between circuits on an
// uplink are not modelled yet.

// NodeID names a node: its index in Network.Nodes.
type NodeID int32

// Handler is what a node's driver implements. Calls come from Sim.Run,
// one at a time.
type Handler interface {
	// Accepted reports a link a peer opened to this node.
	Accepted(l *Link)
	// Cell delivers a cell that arrived on l. c is valid only during the
	// call.
	Cell(l *Link, c *circuit.Cell)
	// Closed reports that l closed: its peer crashed or a partition cut
	// it. It is not called on the side that closed it with Close.
	Closed(l *Link)
}

// Errors of Dial.
var (
	ErrRefused = errors.New("simnet: connection refused")
	ErrTimeout = errors.New("simnet: connection timed out")
	ErrClosed  = errors.New("simnet: link closed")
)

// Node is one host of the network.
type Node struct {
	ID     NodeID
	Name   string
	Region int
	Addr   netip.Addr
	UpRate float64 // uplink, bytes per second; 0: unlimited

	handler Handler
	up      bool
	upFree  int64
	links   []*Link

	BytesSent uint64 // cells' bytes put on the uplink
	BytesRecv uint64
	BusyNanos int64 // virtual time the uplink spent sending
}

// SetHandler sets the node's handler (before the simulation delivers
// anything to it).
func (n *Node) SetHandler(h Handler) { n.handler = h }

// Up reports whether the node is running.
func (n *Node) Up() bool { return n.up }

// Links returns the node's open links, oldest first. The slice is the
// network's: do not modify it.
func (n *Node) Links() []*Link { return n.links }

// Network is a set of nodes on a Sim.
type Network struct {
	sim     *Sim
	Nodes   []*Node
	latency [][]time.Duration
	jitter  float64
	loss    float64
	rng     *Rand
	cut     func(a, b *Node) bool
	nextID  uint64
	scratch circuit.Cell
	rings   ringPool

	// DialTimeout is how long a dial across a partition takes to fail.
	DialTimeout time.Duration
}

// Config is the network model's parameters.
type Config struct {
	// Latency[i][j] is the one-way latency from region i to region j.
	Latency [][]time.Duration
	Jitter  float64 // fraction of the latency, 0..1
	Loss    float64 // probability that a cell needs a retransmission, 0..1
}

// NewNetwork returns an empty network on s.
func NewNetwork(s *Sim, cfg Config) *Network {
	return &Network{sim: s, latency: cfg.Latency, jitter: cfg.Jitter, loss: cfg.Loss,
		rng: s.Stream("network"), DialTimeout: 10 * time.Second}
}

// Sim is the simulation the network runs on.
func (n *Network) Sim() *Sim { return n.sim }

// AddNode adds a running node and returns it. Its ID is its index.
func (n *Network) AddNode(name string, region int, addr netip.Addr, upRate float64, h Handler) *Node {
	nd := &Node{ID: NodeID(len(n.Nodes)), Name: name, Region: region, Addr: addr, UpRate: upRate, handler: h, up: true}
	n.Nodes = append(n.Nodes, nd)
	return nd
}

// Latency is the one-way latency from a to b.
func (n *Network) Latency(a, b *Node) time.Duration { return n.latency[a.Region][b.Region] }

// LatencyRegions is the one-way latency from region a to region b.
func (n *Network) LatencyRegions(a, b int) time.Duration { return n.latency[a][b] }

func (n *Network) reachable(a, b *Node) bool {
	return a.up && b.up && (n.cut == nil || !n.cut(a, b))
}

// Dial opens a link from node from to node to and calls done with it, or
// with an error, later (see the model above). done is not called if from
// crashes meanwhile.
func (n *Network) Dial(from, to *Node, done func(*Link, error)) {
	rtt := 2 * n.Latency(from, to)
	switch {
	case !from.up:
		return
	case !to.up:
		n.sim.After(rtt, func() {
			if from.up {
				done(nil, ErrRefused)
			}
		})
		return
	case n.cut != nil && n.cut(from, to):
		n.sim.After(n.DialTimeout, func() {
			if from.up {
				done(nil, ErrTimeout)
			}
		})
		return
	}
	n.sim.After(2*rtt, func() {
		if !from.up {
			return
		}
		if !n.reachable(from, to) {
			done(nil, ErrRefused)
			return
		}
		n.nextID++
		l := &Link{ID: n.nextID, net: n, ends: [2]*Node{from, to}, lat: int64(n.Latency(from, to))}
		l.dir[0] = pipe{link: l, to: 1}
		l.dir[1] = pipe{link: l, to: 0}
		from.links = append(from.links, l)
		to.links = append(to.links, l)
		to.handler.Accepted(l)
		done(l, nil)
	})
}

// Crash stops node nd: every link closes, cells in flight are lost, and
// its handler hears nothing more until Restart.
func (n *Network) Crash(nd *Node) {
	if !nd.up {
		return
	}
	nd.up = false
	links := nd.links
	nd.links = nil
	for _, l := range links {
		l.abort(nd)
	}
}

// Restart brings a crashed node back with a new handler (a restarted
// process has lost its state).
func (n *Network) Restart(nd *Node, h Handler) {
	if nd.up {
		return
	}
	nd.up, nd.handler, nd.upFree = true, h, n.sim.now
}

// SetCut installs a partition: cut(a, b) reports whether a and b cannot
// reach each other (nil: no partition). Open links it cuts close at once.
func (n *Network) SetCut(cut func(a, b *Node) bool) {
	n.cut = cut
	if cut == nil {
		return
	}
	for _, nd := range n.Nodes {
		for i := 0; i < len(nd.links); {
			l := nd.links[i]
			if l.ends[0] == nd && cut(l.ends[0], l.ends[1]) {
				l.abort(nil)
				continue // l was removed from nd.links
			}
			i++
		}
	}
}

// Link is an open link between two nodes. Ends[0] dialed Ends[1].
type Link struct {
	ID     uint64
	net    *Network
	ends   [2]*Node
	lat    int64
	dir    [2]pipe // dir[i] carries cells from ends[i] to ends[1-i]
	closed bool
	// State holds each end's driver state: State[i] belongs to Ends(i).
	State [2]any
}

// End returns end i (0: the dialer, 1: the acceptor).
func (l *Link) End(i int) *Node { return l.ends[i] }

// Side returns which end nd is (0 or 1).
func (l *Link) Side(nd *Node) int {
	if l.ends[0] == nd {
		return 0
	}
	return 1
}

// Peer returns the end that is not nd.
func (l *Link) Peer(nd *Node) *Node { return l.ends[1-l.Side(nd)] }

// Closed reports whether the link is closed.
func (l *Link) Closed() bool { return l.closed }

// Send puts a copy of c on the link from node from. It never blocks: the
// uplink queues it (see the model above).
func (l *Link) Send(from *Node, c *circuit.Cell) error {
	if l.closed {
		return ErrClosed
	}
	n := l.net
	now := n.sim.now
	depart := max(now, from.upFree)
	if from.UpRate > 0 {
		d := int64(float64(circuit.CellSize) / from.UpRate * 1e9)
		depart += d
		from.BusyNanos += d
	}
	from.upFree = depart
	from.BytesSent += circuit.CellSize
	at := depart + l.lat
	if n.jitter > 0 {
		at += int64(n.rng.Float64() * n.jitter * float64(l.lat))
	}
	if n.loss > 0 && n.rng.Float64() < n.loss {
		at += max(int64(200*time.Millisecond), 2*l.lat)
	}
	p := &l.dir[l.Side(from)]
	at = max(at, p.last)
	p.last = at
	p.push(at, c)
	if !p.scheduled {
		p.scheduled = true
		n.sim.push(event{at: at, pipe: p})
	}
	return nil
}

// Close closes the link from nd's side: cells in flight are lost and the
// peer learns of it one latency later.
func (l *Link) Close(nd *Node) {
	if l.closed {
		return
	}
	l.abort(nd)
}

// abort closes l and tells the ends other than by (nil: both) after one
// latency.
func (l *Link) abort(by *Node) {
	l.closed = true
	for i := range l.dir {
		l.dir[i].release()
	}
	for _, nd := range l.ends {
		removeLink(nd, l)
		if nd == by || !nd.up {
			continue
		}
		h := nd.handler
		l.net.sim.After(time.Duration(l.lat), func() {
			if nd.up && nd.handler == h {
				h.Closed(l)
			}
		})
	}
}

func removeLink(nd *Node, l *Link) {
	for i, x := range nd.links {
		if x == l {
			nd.links = append(nd.links[:i], nd.links[i+1:]...)
			return
		}
	}
}

// pipe is one direction of a link: the cells in flight, in arrival order,
// in a ring buffer whose size is a power of two. Only its first cell has
// an event in the queue. An empty pipe gives its ring back to the
// network's pool, so idle links hold no cell memory and busy ones do not
// allocate (a ring of 514-byte cells is large: allocating and clearing
// them was a tenth of the simulator's time).
type pipe struct {
	link      *Link
	to        int
	buf       []inflight
	head, n   int
	last      int64 // arrival time of the last cell sent
	scheduled bool
}

type inflight struct {
	at   int64
	cell circuit.Cell
}

// minRing is the smallest ring a pipe gets.
const minRing = 16

func (p *pipe) push(at int64, c *circuit.Cell) {
	if p.n == len(p.buf) {
		pool := &p.link.net.rings
		nb := pool.get(max(minRing, 2*len(p.buf)))
		mask := len(p.buf) - 1
		for i := range p.n {
			nb[i] = p.buf[(p.head+i)&mask]
		}
		pool.put(p.buf)
		p.buf, p.head = nb, 0
	}
	e := &p.buf[(p.head+p.n)&(len(p.buf)-1)]
	e.at, e.cell = at, *c
	p.n++
}

// release gives the pipe's ring back to the pool.
func (p *pipe) release() {
	p.link.net.rings.put(p.buf)
	p.buf, p.head, p.n = nil, 0, 0
}

// deliver hands the first cell to the receiving node and schedules the
// next.
func (p *pipe) deliver() {
	p.scheduled = false
	if p.link.closed || p.n == 0 {
		return
	}
	n := p.link.net
	n.scratch = p.buf[p.head].cell
	p.head = (p.head + 1) & (len(p.buf) - 1)
	p.n--
	if p.n == 0 {
		p.release()
	} else {
		p.scheduled = true
		n.sim.push(event{at: p.buf[p.head].at, pipe: p})
	}
	to := p.link.ends[p.to]
	to.BytesRecv += circuit.CellSize
	to.handler.Cell(p.link, &n.scratch)
}

// ringPool keeps free rings by size class (log2 of the length), up to
// ringPoolBytes of cells per class, so that the memory kept for reuse
// stays bounded whatever the traffic did.
type ringPool struct {
	free [40][][]inflight
}

const ringPoolBytes = 16 << 20

func ringClass(n int) int { return bits.Len(uint(n)) - 1 }

// get returns a ring of length n (a power of two). Its contents are stale
// cells, which push overwrites before delivery reads them.
func (r *ringPool) get(n int) []inflight {
	c := ringClass(n)
	if l := len(r.free[c]); l > 0 {
		b := r.free[c][l-1]
		r.free[c][l-1] = nil
		r.free[c] = r.free[c][:l-1]
		return b
	}
	return make([]inflight, n)
}

func (r *ringPool) put(b []inflight) {
	if len(b) == 0 {
		return
	}
	c := ringClass(len(b))
	if (len(r.free[c])+1)*len(b)*int(unsafe.Sizeof(inflight{})) > ringPoolBytes {
		return // let the collector have it
	}
	r.free[c] = append(r.free[c], b)
}
