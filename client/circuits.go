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
	mu      sync.Mutex
	cc      *circuit.ClientCircuit
	link    *clientLink
	id      uint32
	acts    circuit.ClientActions
	step    chan error // a hop was added, or the circuit failed
	streams map[uint16]*Stream
	exit    *directory.RouterStatus
	path    []*directory.RouterStatus
	stable  bool      // every hop was chosen Stable (for long-lived ports)
	built   time.Time // when the last hop was added; set before addCirc
	dead    bool
	pathUse PathUse // path bias (pathuse.go)

	// Guarded by Client.mu. A circuit is clean until its first stream
	// claims it for that stream's isolation key; after that only streams
	// with the same key may use it, until it is retired.
	isolation string
	firstUse  time.Time // zero while clean
	retired   bool      // takes no new streams
}

var errDestroyed = errors.New("client: circuit destroyed")

// linkTo returns the link to guard g, dialing it with a fresh throwaway
// static key so relays cannot link this client's connections.
func (c *Client) linkTo(ctx context.Context, g *directory.RouterStatus) (*clientLink, error) {
	c.mu.Lock()
	if l, ok := c.links[g.ID]; ok {
		select {
		case <-l.link.Done(): // closing: its reader will remove it
		default:
			c.mu.Unlock()
			return l, nil
		}
	}
	c.mu.Unlock()
	throwaway, err := crypto.GenerateStaticKey(c.cfg.Rand)
	if err != nil {
		return nil, err
	}
	link, err := linkio.Dial(ctx, &c.dialer, g.Address.String(), &throwaway, g.LinkKey, c.cfg.Rand)
	if err != nil {
		if ctx.Err() == nil || errors.Is(err, context.DeadlineExceeded) {
			c.guardResult(g, false)
		}
		return nil, fmt.Errorf("client: link to guard %s: %w", g.Nickname, err)
	}
	c.guardResult(g, true)
	cl := &clientLink{link: link, circs: make(map[uint32]*clientCirc)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		link.Close()
		return nil, ErrClosed
	}
	if old, ok := c.links[g.ID]; ok {
		select {
		case <-old.link.Done():
		default:
			c.mu.Unlock()
			link.Close()
			return old, nil
		}
	}
	c.links[g.ID] = cl
	c.mu.Unlock()
	c.goLoop(func(context.Context) { c.readLink(g.ID, cl) })
	return cl, nil
}

func (c *Client) readLink(id directory.RelayID, cl *clientLink) {
	// Streams that got data are woken once per batch of cells read (a
	// frame or more), not once per cell: their readers then take many
	// cells' data per Read.
	var ready []*Stream
	handle := func(cell *circuit.Cell) error {
		cl.mu.Lock()
		circ := cl.circs[cell.CircID]
		cl.mu.Unlock()
		if circ == nil {
			return nil
		}
		ready = c.handleCell(circ, cell, ready)
		return nil
	}
	flush := func() error {
		for i, s := range ready {
			notify(s.readyR)
			ready[i] = nil
		}
		ready = ready[:0]
		return nil
	}
	err := cl.link.ReadBatches(handle, flush)
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

// handleCell takes one cell for circ. Streams that got data are appended
// to ready (without duplicates) for the caller to wake.
func (c *Client) handleCell(circ *clientCirc, cell *circuit.Cell, ready []*Stream) []*Stream {
	circ.mu.Lock()
	if circ.dead {
		circ.mu.Unlock()
		return ready
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
			ready = c.applyBatched(circ, ready)
			if circ.pathUse.Answered() {
				defer c.notePath(circ, true)
			}
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
	return ready
}

func (circ *clientCirc) signal(err error) {
	select {
	case circ.step <- err:
	default:
	}
}

// apply carries out circ.acts. circ.mu is held.
func (c *Client) apply(circ *clientCirc) {
	for _, s := range c.applyBatched(circ, nil) {
		notify(s.readyR)
	}
}

// applyBatched is apply for the link reader: streams that got data are
// appended to ready for it to wake at the end of its batch. circ.mu is
// held.
func (c *Client) applyBatched(circ *clientCirc, ready []*Stream) []*Stream {
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
			if len(ready) == 0 || ready[len(ready)-1] != s {
				ready = append(ready, s)
			}
		}
	}
	for _, id := range a.Finished {
		if s := circ.streams[id]; s != nil {
			s.finished()
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
	return ready
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
	if count, ok := circ.pathUse.Closed(circ.cc.Hops(), len(circ.path)); count {
		defer c.notePath(circ, ok)
	}
	// The streams' state is guarded by circ.mu: end them under it (their
	// readers check it under circ.mu).
	for _, s := range circ.streams {
		s.ended(circuit.EndDestroy)
	}
	circ.streams = nil
	circ.mu.Unlock()
	circ.signal(errDestroyed)
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

// guardResult records whether connecting to guard g worked, and writes
// the state file if the guard's state changed.
func (c *Client) guardResult(g *directory.RouterStatus, ok bool) {
	now := c.cfg.Now()
	c.mu.Lock()
	var changed bool
	if ok {
		changed = c.guards.MarkConnected(g.ID, now)
	} else {
		changed = c.guards.MarkFailed(g.ID, now)
		c.guards = UpdateGuards(c.guards, c.consensus, now, c.cfg.Rand)
	}
	c.mu.Unlock()
	if !ok {
		c.log.Info("guard unreachable; using the next guard", "guard", g.Nickname)
	}
	if changed {
		c.saveState()
	}
}

// notePath records a circuit's outcome against its guard (the path-bias
// rule of guards.go) and warns when the guard is disabled.
func (c *Client) notePath(circ *clientCirc, ok bool) {
	g := circ.path[0]
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return // circuits dying at shutdown say nothing about the guard
	}
	disabled := c.guards.NoteCircuit(g.ID, ok, c.cfg.Now())
	if disabled {
		c.guards = UpdateGuards(c.guards, c.consensus, c.cfg.Now(), c.cfg.Rand)
	}
	c.mu.Unlock()
	if disabled {
		c.log.Warn("guard disabled: too few of the circuits through it worked (path bias; it may be tampering with cells)",
			"guard", g.Nickname, "min_uses", PathBiasMinCircuits, "rate_below", PathBiasDisableRate)
		c.saveState()
	}
}

// suspectFor is how long a relay that failed to extend is avoided (when
// other relays fit).
const suspectFor = 2 * time.Minute

// pickPath chooses a path for a circuit to port under the client's lock.
func (c *Client) pickPath(port uint16) ([]*directory.RouterStatus, error) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.consensus == nil {
		return nil, ErrNoConsensus
	}
	if len(c.guards.Entries) == 0 {
		c.guards = UpdateGuards(c.guards, c.consensus, now, c.cfg.Rand)
	}
	for id, until := range c.suspect {
		if !now.Before(until) {
			delete(c.suspect, id)
		}
	}
	return ChoosePath(&c.guards, c.consensus, now, c.cfg.Rand, PathRequest{
		Port: port, Stable: NeedsStable(port), Length: c.cfg.PathLength,
		Avoid: func(r *directory.RouterStatus) bool { _, bad := c.suspect[r.ID]; return bad },
	})
}

// buildCircuit picks a path for port and builds it hop by hop within the
// learned build timeout. The circuit is not yet in c.circs (addCirc).
func (c *Client) buildCircuit(ctx context.Context, port uint16) (*clientCirc, error) {
	select {
	case c.buildSem <- struct{}{}:
		defer func() { <-c.buildSem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	path, err := c.pickPath(port)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	timeout := c.cbt.Timeout()
	c.mu.Unlock()
	start := time.Now()
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl, err := c.linkTo(bctx, path[0])
	if err != nil {
		return nil, err
	}
	circ := &clientCirc{cc: circuit.NewClientCircuit(c.cfg.Now), link: cl, step: make(chan error, 1),
		streams: make(map[uint16]*Stream), exit: path[len(path)-1], path: path, stable: NeedsStable(port)}
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
	payloads, err := circ.cc.Create(c.cfg.Rand, HopSpec(path[0]))
	circ.mu.Unlock()
	for i := 0; err == nil && i < len(payloads); i++ {
		cell := circuit.Cell{CircID: circ.id, Cmd: circuit.CmdCreate, Payload: payloads[i]}
		err = cl.link.Send(&cell)
	}
	// While the CREATE is on its way, start the later hops' handshakes:
	// their key generation and KEM encapsulation then cost the build no
	// round-trip time. A handshake that cannot start (a bad onion key)
	// fails the build when its hop's turn comes, as Extend would.
	prepared := make([]*circuit.PreparedHop, len(path))
	prepErrs := make([]error, len(path))
	for i := 1; i < len(path) && err == nil; i++ {
		prepared[i], prepErrs[i] = circuit.PrepareHop(c.cfg.Rand, HopSpec(path[i]), i+1)
	}
	if err == nil {
		err = circ.wait(bctx)
	}
	for i := 1; i < len(path) && err == nil; i++ {
		if err = prepErrs[i]; err != nil {
			break
		}
		circ.mu.Lock()
		circ.acts.Reset()
		err = circ.cc.ExtendPrepared(prepared[i], &circ.acts)
		if err == nil {
			c.apply(circ)
		}
		circ.mu.Unlock()
		if err == nil {
			err = circ.wait(bctx)
		}
	}
	if err != nil {
		c.kill(circ, true)
		c.buildFailed(ctx, bctx, circ, path)
		return nil, fmt.Errorf("client: building circuit: %w", err)
	}
	took := time.Since(start)
	c.mu.Lock()
	c.cbt.Observe(took)
	c.mu.Unlock()
	circ.built = c.cfg.Now()
	c.log.Debug("circuit built", "hops", len(path), "took", took)
	return circ, nil
}

// buildFailed learns from a failed build: a timeout (bctx expired, ctx did
// not) teaches the build timeout; the relay the circuit was being extended
// to is avoided for suspectFor.
func (c *Client) buildFailed(ctx, bctx context.Context, circ *clientCirc, path []*directory.RouterStatus) {
	circ.mu.Lock()
	hops := circ.cc.Hops()
	circ.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if bctx.Err() != nil && ctx.Err() == nil {
		c.cbt.ObserveTimeout()
	}
	if hops >= 1 && hops < len(path) && ctx.Err() == nil {
		c.suspect[path[hops].ID] = c.cfg.Now().Add(suspectFor)
	}
}

func (circ *clientCirc) wait(ctx context.Context) error {
	select {
	case err := <-circ.step:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// addCirc adds a built circuit to the open ones (clean, until claimed).
func (c *Client) addCirc(circ *clientCirc) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	circ.mu.Lock()
	dead := circ.dead
	circ.mu.Unlock()
	switch {
	case c.closed:
		go c.kill(circ, true)
		return ErrClosed
	case dead:
		return errDestroyed
	case len(c.circs) >= MaxCircuits:
		go c.kill(circ, true)
		return ErrTooManyCircuits
	}
	c.circs = append(c.circs, circ)
	return nil
}

// usableFor reports whether circ may take a new stream to port with the
// isolation key at now. c.mu is held.
func (c *Client) usableFor(circ *clientCirc, isolation string, port uint16, now time.Time) bool {
	if circ.retired || !circ.exit.ExitPolicy.AllowsPort(port) || (NeedsStable(port) && !circ.stable) {
		return false
	}
	if !circ.firstUse.IsZero() && (circ.isolation != isolation || now.Sub(circ.firstUse) >= c.cfg.MaxCircuitDirtiness) {
		return false
	}
	circ.mu.Lock()
	defer circ.mu.Unlock()
	return !circ.dead && circ.cc.StreamCount() < circuit.MaxStreamsPerCircuit
}

// circuitFor returns an open circuit for a new stream to port with this
// isolation key, claiming it for the key: first a circuit already used by
// the key, then a clean one; if none fits it builds one. Circuits used by
// different keys are never shared.
func (c *Client) circuitFor(ctx context.Context, isolation string, port uint16) (*clientCirc, error) {
	now := c.cfg.Now()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := c.predicted[port]; !ok && len(c.predicted) >= maxPredictedPorts {
		c.forgetOldestPort()
	}
	c.predicted[port] = now
	var clean *clientCirc
	for _, circ := range c.circs {
		if !c.usableFor(circ, isolation, port, now) {
			continue
		}
		if !circ.firstUse.IsZero() {
			c.mu.Unlock()
			return circ, nil
		}
		if clean == nil {
			clean = circ
		}
	}
	if clean != nil {
		clean.isolation, clean.firstUse = isolation, now
		c.mu.Unlock()
		c.kickMaintenance() // replace the clean circuit just used
		return clean, nil
	}
	c.mu.Unlock()
	c.kickMaintenance()
	circ, err := c.buildCircuit(ctx, port)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	circ.isolation, circ.firstUse = isolation, c.cfg.Now()
	c.mu.Unlock()
	if err := c.addCirc(circ); err != nil {
		return nil, err
	}
	return circ, nil
}

// retire stops circ from taking new streams; its open streams go on.
func (c *Client) retire(circ *clientCirc) {
	c.mu.Lock()
	circ.retired = true
	c.mu.Unlock()
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
