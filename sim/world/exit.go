package world

import (
	"bytes"
	"strconv"
	"time"

	"github.com/veilnet/veil/circuit"
)

// The exit: BEGIN "connects" to a simulated server. The server is not a
// network node; it is reached with the latency between the exit's region
// and its own, and it answers a request "GET <bytes>\n" with that many
// bytes, all available one round trip after the request arrives (a fast
// server; the exit's uplink and the circuit's congestion control limit
// the transfer). The exit policy is the relay's real one. In VOPR runs
// the request is "GET <bytes> <key>\n" and the bytes are the key's
// content (vopr.go), which the client checks.

// maxRequest bounds the request line an exit stream buffers.
const maxRequest = 64

// zeros is the response body: the content does not matter to the
// simulation (cells are encrypted anyway).
var zeros [64 << 10]byte

type exitStream struct {
	id        uint16
	srv       *server
	req       []byte
	ready     bool // the response is available
	remaining int  // response bytes not yet packaged
	// size and key: a request "GET <size> <key>" (VOPR runs) is answered
	// with the content of key (vopr.go) rather than zeros.
	size int
	key  uint64
}

func (p *relayProc) rtt(srv *server) time.Duration {
	return 2 * p.r.w.net.LatencyRegions(p.r.node.Region, srv.region)
}

// call runs a circuit method outside apply with fresh actions and carries
// out the cells it produced; an error destroys the circuit.
func (p *relayProc) call(e *rcirc, f func(a *circuit.RelayActions) error) {
	if p.dead || e.dead {
		return
	}
	a := &p.r.w.scratch
	a.Reset()
	if err := f(a); err != nil {
		p.destroy(e, circuit.DestroyProtocol, nil)
		return
	}
	p.flush(e, a)
}

// begin opens an exit stream (relay.begin): policy, name, connect.
func (p *relayProc) begin(e *rcirc, b circuit.BeginRequest) {
	policy := p.r.dt.Desc.ExitPolicy
	srv := p.r.w.serverByName(b.Host)
	var reason circuit.EndReason
	switch {
	case policy == nil || !policy.AllowsPort(b.Port):
		reason = circuit.EndExitPolicy
	case srv == nil:
		reason = circuit.EndResolveFailed
	case !policy.Allows(srv.addr, b.Port):
		reason = circuit.EndExitPolicy
	}
	if reason != 0 {
		id := b.StreamID
		p.r.w.sim.After(0, func() {
			p.call(e, func(a *circuit.RelayActions) error { return e.rc.StreamEnded(id, reason, a) })
		})
		return
	}
	p.r.w.sim.After(p.rtt(srv), func() {
		if p.dead || e.dead {
			return
		}
		e.streams = append(e.streams, &exitStream{id: b.StreamID, srv: srv, remaining: -1})
		p.call(e, func(a *circuit.RelayActions) error { return e.rc.StreamConnected(b.StreamID, srv.addr, a) })
	})
}

// resolve answers RESOLVE from the servers' names.
func (p *relayProc) resolve(e *rcirc, q circuit.ResolveRequest) {
	p.r.w.sim.After(0, func() {
		p.call(e, func(a *circuit.RelayActions) error {
			if srv := p.r.w.serverByName(q.Host); srv != nil {
				return e.rc.Resolved(q.ID, 0, []circuit.ResolvedAddr{{Addr: srv.addr, TTL: 300}}, a)
			}
			return e.rc.Resolved(q.ID, circuit.EndResolveFailed, nil, a)
		})
	})
}

func (e *rcirc) stream(id uint16) *exitStream {
	for _, s := range e.streams {
		if s.id == id {
			return s
		}
	}
	return nil
}

// streamData takes request bytes from the client; the server answers one
// round trip after the request line is complete.
func (p *relayProc) streamData(e *rcirc, d circuit.StreamData) {
	s := e.stream(d.StreamID)
	if s == nil {
		return
	}
	id := s.id
	p.r.w.sim.After(0, func() {
		p.call(e, func(a *circuit.RelayActions) error { return e.rc.StreamConsumed(id, 1, a) })
	})
	if s.remaining >= 0 {
		return // only one request per stream
	}
	s.req = append(s.req, d.Data...)
	i := bytes.IndexByte(s.req, '\n')
	if i < 0 {
		if len(s.req) > maxRequest {
			s.remaining = 0
			p.r.w.sim.After(0, func() { p.endStream(e, s, circuit.EndMisc) })
		}
		return
	}
	line := bytes.TrimPrefix(s.req[:i], []byte("GET "))
	if sp := bytes.IndexByte(line, ' '); sp >= 0 {
		s.key, _ = strconv.ParseUint(string(line[sp+1:]), 10, 64)
		line = line[:sp]
	}
	n, err := strconv.Atoi(string(line))
	if err != nil || n < 0 {
		s.remaining = 0
		p.r.w.sim.After(0, func() { p.endStream(e, s, circuit.EndMisc) })
		return
	}
	s.remaining, s.size = n, n
	p.r.w.sim.After(p.rtt(s.srv), func() {
		if p.dead || e.dead {
			return
		}
		s.ready = true
		p.pump(e)
	})
}

func (p *relayProc) removeStream(e *rcirc, id uint16) {
	for i, s := range e.streams {
		if s.id == id {
			e.streams = append(e.streams[:i], e.streams[i+1:]...)
			return
		}
	}
}

func (p *relayProc) endStream(e *rcirc, s *exitStream, reason circuit.EndReason) {
	p.removeStream(e, s.id)
	p.call(e, func(a *circuit.RelayActions) error { return e.rc.StreamEnded(s.id, reason, a) })
}

// pump packages response data while the circuit's window allows, in
// stream order; a stream whose response is all sent is ended (END DONE).
func (p *relayProc) pump(e *rcirc) {
	for i := 0; i < len(e.streams) && !e.dead && !p.dead; i++ {
		s := e.streams[i]
		if !s.ready {
			continue
		}
		for s.remaining > 0 && e.rc.CanPackage(s.id) {
			a := &p.r.w.scratch
			a.Reset()
			data := zeros[:min(s.remaining, len(zeros))]
			if v := p.r.w.vopr; v != nil && s.key != 0 {
				data = v.content(s.srv, s.key, s.size-s.remaining, len(data))
			}
			n, err := e.rc.PackageData(s.id, data, a)
			s.remaining -= n
			if err != nil {
				p.destroy(e, circuit.DestroyProtocol, nil)
				return
			}
			p.flush(e, a)
			if n == 0 {
				break
			}
		}
		if s.remaining == 0 {
			p.endStream(e, s, circuit.EndDone)
			i--
		}
	}
}
