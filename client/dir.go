package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
)

// Consensus fetching. Until internal/dirclient grows its Manager (fetching
// from caches with clock-skew detection), the client asks up to
// maxCacheTries directory caches listed in the consensus it holds (relays
// with a DirAddress), then the authorities, in random order, until one
// serves a consensus that verifies against the network file and is newer
// than the one held. Every document is verified; where it came from does
// not matter for trust.

const maxCacheTries = 3

// errNotNewer: a source served a valid consensus, but not a newer one.
var errNotNewer = errors.New("client: no newer consensus yet")

// fetchConsensus fetches, verifies and installs a consensus, then updates
// the guard sample for it.
func (c *Client) fetchConsensus(ctx context.Context) error {
	var addrs, names []string
	c.mu.Lock()
	cur := c.consensus
	c.mu.Unlock()
	if cur != nil {
		var caches []string
		for i := range cur.Relays {
			if r := &cur.Relays[i]; r.HasDirCache() && r.Flags.Has(directory.FlagRunning|directory.FlagValid) {
				caches = append(caches, r.DirAddress.String())
			}
		}
		for i := 0; i < maxCacheTries && len(caches) > 0; i++ {
			j := int(randIntn64(c.cfg.Rand, int64(len(caches))))
			addrs, names = append(addrs, caches[j]), append(names, "a directory cache")
			caches = append(caches[:j], caches[j+1:]...)
		}
	}
	auths := c.cfg.Network.Authorities
	start := int(randIntn64(c.cfg.Rand, int64(len(auths))))
	for i := range auths {
		a := auths[(start+i)%len(auths)]
		addrs, names = append(addrs, a.Address), append(names, a.Name)
	}
	var errs []error
	for i, addr := range addrs {
		fctx, cancel := context.WithTimeout(ctx, FetchTimeout)
		raw, err := dirclient.FetchConsensus(fctx, addr)
		cancel()
		if err == nil {
			var cons *directory.Consensus
			if cons, err = directory.VerifyConsensus(raw, c.cfg.Network, c.cfg.Now()); err == nil {
				if c.installConsensus(cons) {
					return nil
				}
				err = errNotNewer
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", names[i], err))
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// installConsensus makes cons current if it is newer than the one held
// and applies it to the guard sample; it reports whether it did.
func (c *Client) installConsensus(cons *directory.Consensus) bool {
	c.mu.Lock()
	if c.consensus != nil && !cons.ValidAfter.After(c.consensus.ValidAfter) {
		c.mu.Unlock()
		return false
	}
	c.consensus = cons
	c.guards = UpdateGuards(c.guards, cons, c.cfg.Now(), c.cfg.Rand)
	c.mu.Unlock()
	c.saveState()
	return true
}

// refreshLoop fetches a new consensus once the current one stops being
// fresh (at a random point of the following sixth of its lifetime, so
// clients do not all ask at once), retrying every few seconds until one
// arrives. The old consensus stays in use meanwhile; circuits are kept.
func (c *Client) refreshLoop(ctx context.Context) {
	for {
		c.mu.Lock()
		cons := c.consensus
		c.mu.Unlock()
		wait := cons.FreshUntil.Sub(c.cfg.Now())
		if spread := cons.ValidUntil.Sub(cons.FreshUntil) / 6; spread > 0 {
			wait += time.Duration(randIntn64(c.cfg.Rand, int64(spread)))
		}
		wait = max(wait, 2*time.Second)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		err := c.fetchConsensus(ctx)
		switch {
		case err == nil || ctx.Err() != nil:
		case errors.Is(err, errNotNewer) && c.cfg.Now().Before(c.Consensus().ValidUntil):
			c.log.Debug("no newer consensus yet", "err", err)
		default:
			c.log.Warn("consensus refresh failed; keeping the current one", "err", err)
		}
	}
}
