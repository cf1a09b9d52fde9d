package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
)

// The client's directory is a dirclient.Manager: it fetches the consensus
// from directory caches listed in the consensus it holds (then the
// authorities), verifies every document against the network file, refuses
// rollback, keeps the last consensus until its valid-until, and reports a
// local clock that disagrees with the authorities as a
// *dirclient.ClockSkewError. Each consensus it accepts is installed here
// (installConsensus) and applied to the guard sample.

// newDirectory returns the client's Manager.
func (c *Client) newDirectory() (*dirclient.Manager, error) {
	return dirclient.NewManager(dirclient.ManagerConfig{
		Network:  c.cfg.Network,
		Now:      c.cfg.Now,
		Logger:   c.log.With("part", "directory"),
		OnUpdate: func(cons *directory.Consensus, _ []byte) { c.installConsensus(cons) },
	})
}

// errClockSkew wraps a clock-skew verdict so bootstrap stops retrying:
// every source would say the same.
var errClockSkew = errors.New("client: the local clock is wrong")

// fetchConsensus asks the directory for a newer consensus once.
func (c *Client) fetchConsensus(ctx context.Context) error {
	err := c.dir.Refresh(ctx)
	var skew *dirclient.ClockSkewError
	if errors.As(err, &skew) {
		return fmt.Errorf("%w: %w", errClockSkew, err)
	}
	return err
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

// refreshLoop keeps the consensus fresh (the Manager fetches at a random
// point after fresh-until, so clients do not all ask at once, and retries
// with backoff). The old consensus stays in use meanwhile; circuits are
// kept.
func (c *Client) refreshLoop(ctx context.Context) {
	c.dir.Run(ctx)
}
