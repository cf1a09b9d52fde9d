package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/linkio"
)

// clientLink is a link to a guard and the circuits on it.
type clientLink struct {
	link   *linkio.Conn
	mu     sync.Mutex
	circs  map[uint32]*clientCirc
	nextID uint32
}

// clientCirc is one circuit and its streams.
type clientCirc struct {
	mu        sync.Mutex
	cc        *circuit.ClientCircuit
	link      *clientLink
	id        uint32
	acts      circuit.ClientActions
	step      chan error // a hop was added, or the circuit failed
	streams   map[uint16]*Stream
	exit      *directory.RouterStatus
	path      []*directory.RouterStatus
	isolation string
	firstUse  time.Time
	dead      bool
}

var errDestroyed = errors.New("client: circuit destroyed")

// linkTo returns the link to guard g, dialing it with a fresh throwaway
// static key so relays cannot link this client's connections.
func (c *Client) linkTo(ctx context.Context, g *directory.RouterStatus) (*clientLink, error) {
	c.mu.Lock()
	if l, ok := c.links[g.ID]; ok {
		c.mu.Unlock()
		return l, nil
	}
	c.mu.Unlock()
	throwaway, err := crypto.GenerateStaticKey(c.cfg.Rand)
	if err != nil {
		return nil, err
	}
	link, err := linkio.Dial(ctx, &c.dialer, g.Address.String(), &throwaway, g.LinkKey, c.cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("client: link to guard: %w", err)
	}
	cl := &clientLink{link: link, circs: make(map[uint32]*clientCirc)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		link.Close()
		return nil, ErrClosed
	}
	if old, ok := c.links[g.ID]; ok {
		c.mu.Unlock()
		link.Close()
		return old, nil
	}
	c.links[g.ID] = cl
	c.mu.Unlock()
	c.goLoop(func(context.Context) { c.readLink(g.ID, cl) })
	return cl, nil
}

func (c *Client) readLink(id directory.RelayID, cl *clientLink) {
	err := cl.link.ReadLoop(func(cell *circuit.Cell) error {
		cl.mu.Lock()
		circ := cl.circs[cell.CircID]
		cl.mu.Unlock()
		if circ == nil {
			return nil
		}
		c.handleCell(circ, cell)
		return nil
	})
	c.log.Debug("guard link closed", "err", err)
	c.mu.Lock()
	if c.links[id] == cl {
		delete(c.links, id)
	}
	c.mu.Unlock()
	cl.mu.Lock()
	circs := make([]*clientCirc, 0, len(cl.circs))
	for _, circ := range cl.circs {
		circs = append(circs, circ)
	}
	cl.mu.Unlock()
	for _, circ := range circs {
		c.kill(circ, false)
	}
}

func (c *Client) handleCell(circ *clientCirc, cell *circuit.Cell) {
	circ.mu.Lock()
	if circ.dead {
		circ.mu.Unlock()
		return
	}
	circ.acts.Reset()
	var err error
	switch cell.Cmd {
	case circuit.CmdCreated:
		err = circ.cc.HandleCreated(&cell.Payload)
		if err == nil {
			circ.signal(nil)
		}
	case circuit.CmdRelay:
		err = circ.cc.HandleBackward(&cell.Payload, &circ.acts)
		if err == nil {
			c.apply(circ)
		}
	case circuit.CmdDestroy:
		err = errDestroyed
	default:
		err = circuit.ErrProtocol
	}
	circ.mu.Unlock()
	if err != nil {
		c.log.Debug("closing circuit", "err", err)
		c.kill(circ, cell.Cmd != circuit.CmdDestroy)
	}
}

func (circ *clientCirc) signal(err error) {
	select {
	case circ.step <- err:
	default:
	}
}

// apply carries out circ.acts. circ.mu is held.
func (c *Client) apply(circ *clientCirc) {
	a := &circ.acts
	for i := range a.ToLink {
		a.ToLink[i].CircID = circ.id
		if circ.link.link.Send(&a.ToLink[i]) != nil {
			break
		}
	}
	if a.Extended {
		circ.signal(nil)
	}
	for _, id := range a.Connected {
		if s := circ.streams[id]; s != nil {
			s.connected()
		}
	}
	for _, d := range a.Data {
		if s := circ.streams[d.StreamID]; s != nil {
			s.push(d.Data)
		}
	}
	for _, e := range a.Ends {
		if s := circ.streams[e.StreamID]; s != nil {
			delete(circ.streams, e.StreamID)
			s.ended(e.Reason)
		}
	}
	for _, id := range a.Writable {
		for sid, s := range circ.streams {
			if id == 0 || id == sid {
				s.wake()
			}
		}
	}
}

// kill marks circ dead, fails its streams and removes it; sendDestroy
// tells the guard.
func (c *Client) kill(circ *clientCirc, sendDestroy bool) {
	circ.mu.Lock()
	if circ.dead {
		circ.mu.Unlock()
		return
	}
	circ.dead = true
	streams := circ.streams
	circ.streams = nil
	circ.mu.Unlock()
	circ.signal(errDestroyed)
	for _, s := range streams {
		s.ended(circuit.EndDestroy)
	}
	circ.link.mu.Lock()
	delete(circ.link.circs, circ.id)
	circ.link.mu.Unlock()
	if sendDestroy {
		d := circuit.DestroyCell(circ.id, circuit.DestroyRequested)
		circ.link.link.Send(&d)
	}
	c.mu.Lock()
	for i, x := range c.circs {
		if x == circ {
			c.circs = append(c.circs[:i], c.circs[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
}

// buildCircuit picks a path for port and builds it hop by hop.
func (c *Client) buildCircuit(ctx context.Context, isolation string, port uint16) (*clientCirc, error) {
	path, err := c.pickPath(port)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, CircuitBuildTimeout)
	defer cancel()
	cl, err := c.linkTo(ctx, path[0])
	if err != nil {
		return nil, err
	}
	circ := &clientCirc{cc: circuit.NewClientCircuit(c.cfg.Now), link: cl, step: make(chan error, 1),
		streams: make(map[uint16]*Stream), exit: path[len(path)-1], path: path, isolation: isolation}
	cl.mu.Lock()
	for {
		cl.nextID = (cl.nextID + 1) &^ circuit.CircIDHighBit
		if _, used := cl.circs[cl.nextID|circuit.CircIDHighBit]; cl.nextID != 0 && !used {
			break
		}
	}
	circ.id = cl.nextID | circuit.CircIDHighBit
	cl.circs[circ.id] = circ
	cl.mu.Unlock()

	circ.mu.Lock()
	payloads, err := circ.cc.Create(c.cfg.Rand, hopSpec(path[0]))
	circ.mu.Unlock()
	for i := 0; err == nil && i < len(payloads); i++ {
		cell := circuit.Cell{CircID: circ.id, Cmd: circuit.CmdCreate, Payload: payloads[i]}
		err = cl.link.Send(&cell)
	}
	if err == nil {
		err = circ.wait(ctx)
	}
	for i := 1; i < len(path) && err == nil; i++ {
		circ.mu.Lock()
		circ.acts.Reset()
		err = circ.cc.Extend(c.cfg.Rand, hopSpec(path[i]), &circ.acts)
		if err == nil {
			c.apply(circ)
		}
		circ.mu.Unlock()
		if err == nil {
			err = circ.wait(ctx)
		}
	}
	if err != nil {
		c.kill(circ, true)
		return nil, fmt.Errorf("client: building circuit: %w", err)
	}
	c.log.Debug("circuit built", "hops", len(path))
	return circ, nil
}

func (circ *clientCirc) wait(ctx context.Context) error {
	select {
	case err := <-circ.step:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// circuitFor returns an open circuit usable for a new stream to port with
// this isolation key, building one if none fits.
func (c *Client) circuitFor(ctx context.Context, isolation string, port uint16) (*clientCirc, error) {
	now := c.cfg.Now()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	for _, circ := range c.circs {
		circ.mu.Lock()
		ok := !circ.dead && circ.isolation == isolation &&
			(circ.firstUse.IsZero() || now.Sub(circ.firstUse) < c.cfg.MaxCircuitDirtiness) &&
			circ.exit.ExitPolicy.AllowsPort(port) && circ.cc.StreamCount() < circuit.MaxStreamsPerCircuit
		circ.mu.Unlock()
		if ok {
			c.mu.Unlock()
			return circ, nil
		}
	}
	c.mu.Unlock()
	circ, err := c.buildCircuit(ctx, isolation, port)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.circs = append(c.circs, circ)
	c.mu.Unlock()
	return circ, nil
}

// CircuitPaths returns the relays of each open circuit, guard first.
func (c *Client) CircuitPaths() [][]directory.RouterStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]directory.RouterStatus
	for _, circ := range c.circs {
		p := make([]directory.RouterStatus, len(circ.path))
		for i, r := range circ.path {
			p[i] = *r
		}
		out = append(out, p)
	}
	return out
}
