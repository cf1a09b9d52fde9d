package relay

import (
	"bytes"
	"context"
	"net/netip"

	"github.com/veilnet/veil/internal/linkio"
)

// One canonical link per relay pair (docs/spec/link.md): byKey maps a peer's
// link key to the link new circuits to it use, whichever side opened it.
// An inbound link's PeerStatic is the initiator's static key, which the
// Noise XK handshake proved it holds, so an inbound link from a relay is
// as good as one we dialed. When two links to the same peer exist (both
// dialed at once), both sides prefer the same one: the link opened by the
// relay with the lower link key. The other keeps its circuits until they
// end; no new circuit is put on it.

// initiatorKey is the link key of the side that opened ls.
func (r *Relay) initiatorKey(ls *linkState) [32]byte {
	if ls.link.Initiator() {
		return r.cfg.LinkKey.Public
	}
	return ls.link.PeerStatic()
}

// preferred reports whether a should be canonical rather than b (same
// peer). r.mu is held.
func (r *Relay) preferred(a, b *linkState) bool {
	ka, kb := r.initiatorKey(a), r.initiatorKey(b)
	return bytes.Compare(ka[:], kb[:]) < 0
}

func linkOpen(ls *linkState) bool {
	select {
	case <-ls.link.Done():
		return false
	default:
		return true
	}
}

// setCanonical makes ls the canonical link to its peer if there is none
// or ls is preferred. r.mu is held.
func (r *Relay) setCanonical(ls *linkState) {
	key := ls.link.PeerStatic()
	if cur, ok := r.byKey[key]; ok && linkOpen(cur) && !r.preferred(ls, cur) {
		return
	}
	r.byKey[key] = ls
}

// unsetCanonical forgets ls and promotes another open link to the same
// peer, if any. r.mu is held.
func (r *Relay) unsetCanonical(ls *linkState) {
	key := ls.link.PeerStatic()
	if r.byKey[key] != ls {
		return
	}
	delete(r.byKey, key)
	for _, o := range r.links {
		if o != ls && o.link.PeerStatic() == key && linkOpen(o) {
			r.setCanonical(o)
		}
	}
}

// dialCall is one dial in progress, shared by every extend to that peer.
type dialCall struct {
	done chan struct{}
	ls   *linkState
	err  error
}

// linkTo returns the canonical link to the relay with link key key,
// dialing it if there is none. Concurrent calls for one key share a dial.
func (r *Relay) linkTo(ctx context.Context, addr netip.AddrPort, key [32]byte) (*linkState, error) {
	r.mu.Lock()
	if ls, ok := r.byKey[key]; ok && linkOpen(ls) {
		r.mu.Unlock()
		return ls, nil
	}
	if call, ok := r.dialing[key]; ok {
		r.mu.Unlock()
		select {
		case <-call.done:
			return call.ls, call.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	call := &dialCall{done: make(chan struct{})}
	r.dialing[key] = call
	r.mu.Unlock()

	call.ls, call.err = r.dial(ctx, addr, key)
	r.mu.Lock()
	delete(r.dialing, key)
	r.mu.Unlock()
	close(call.done)
	return call.ls, call.err
}

func (r *Relay) dial(ctx context.Context, addr netip.AddrPort, key [32]byte) (*linkState, error) {
	link, err := linkio.Dial(ctx, &r.dialer, addr.String(), &r.cfg.LinkKey, key, r.cfg.Rand)
	r.metrics.Handshake("link_out", err == nil)
	if err != nil {
		return nil, err
	}
	ls, ok := r.addLink(link, true)
	if !ok {
		link.Close()
		return nil, errShuttingDown
	}
	if !r.spawn(func() { r.readLink(ls, true) }) {
		link.Close()
		return nil, errShuttingDown
	}
	return ls, nil
}
