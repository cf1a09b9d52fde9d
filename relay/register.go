package relay

import (
	"context"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
)

// Registration: the descriptor is uploaded to every authority at start,
// whenever it changes (onion key rotation, a reloaded exit policy or
// bandwidth) and every UploadInterval; failed uploads are retried sooner.
// The relay also watches the consensus to notice when it is not listed,
// and to learn which link keys belong to relays (relays are exempt from
// the per-address limits meant for clients).

// uploadLoop uploads the descriptor until ctx is done.
func (r *Relay) uploadLoop(ctx context.Context) {
	retry := time.Second
	for {
		failed := r.uploadOnce(ctx)
		wait := r.cfg.UploadInterval
		if failed > 0 {
			wait = retry
			retry = min(retry*2, r.cfg.UploadInterval)
		} else {
			retry = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.changed:
			t.Stop()
			retry = time.Second
		case <-t.C:
		}
	}
}

func (r *Relay) uploadOnce(ctx context.Context) (failed int) {
	desc, err := r.Descriptor()
	if err != nil {
		r.log.Error("signing descriptor", "err", err)
		return len(r.cfg.Network.Authorities)
	}
	for _, a := range r.cfg.Network.Authorities {
		uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := dirclient.UploadDescriptor(uctx, a.Address, desc)
		cancel()
		if err != nil {
			failed++
			r.metrics.Uploads.WithLabelValues("failed").Inc()
			r.log.Warn("descriptor upload failed", "authority", a.Name, "err", err)
		} else {
			r.metrics.Uploads.WithLabelValues("ok").Inc()
			r.log.Debug("descriptor uploaded", "authority", a.Name)
		}
	}
	return failed
}

// consensusLoop follows the consensus (from cfg.Directory, or a Manager of
// its own) and checks every ConsensusInterval whether this relay is
// listed.
func (r *Relay) consensusLoop(ctx context.Context) {
	if r.cfg.ConsensusInterval < 0 {
		return
	}
	m := r.cfg.Directory
	if m == nil {
		var err error
		m, err = dirclient.NewManager(dirclient.ManagerConfig{Network: r.cfg.Network, Now: r.cfg.Now, Logger: r.log.With("component", "directory")})
		if err != nil {
			r.log.Error("cannot follow the consensus", "err", err)
			return
		}
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			if m.Bootstrap(ctx) == nil {
				m.Run(ctx)
			}
		}()
	}
	started := r.cfg.Now()
	var seen time.Time // ValidAfter of the last consensus checked
	t := time.NewTicker(r.cfg.ConsensusInterval)
	defer t.Stop()
	for {
		if c := m.Consensus(); c != nil && !c.ValidAfter.Equal(seen) {
			seen = c.ValidAfter
			r.checkListed(c, started)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkListed records whether c lists this relay, and the relays' link
// keys. A relay that has just started is not expected in a consensus
// voted before its descriptor could arrive: it warns only after two
// consensus periods.
func (r *Relay) checkListed(c *directory.Consensus, started time.Time) {
	known := make(map[[32]byte]bool, len(c.Relays))
	for i := range c.Relays {
		known[c.Relays[i].LinkKey] = true
	}
	r.known.Store(&known)
	rs := c.Relay(r.ID())
	switch {
	case rs != nil:
		r.metrics.InConsensus.Set(1)
		r.log.Debug("listed in the consensus", "flags", rs.Flags.String())
		if rs.OnionKey != r.currentOnionKey().X25519.Public {
			r.log.Info("the consensus lists an older onion key; the new descriptor is on its way")
		}
	case c.ValidAfter.Sub(started) < 2*c.FreshUntil.Sub(c.ValidAfter):
		r.metrics.InConsensus.Set(0)
		r.log.Info("not listed in the consensus yet", "valid_after", c.ValidAfter.UTC().Format(time.RFC3339))
	default:
		r.metrics.InConsensus.Set(0)
		r.log.Warn("this relay is not listed in the consensus: check that its address is reachable from the authorities and its clock is right",
			"valid_after", c.ValidAfter.UTC().Format(time.RFC3339))
	}
}
