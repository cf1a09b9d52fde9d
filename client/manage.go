package client

import (
	"context"
	"time"
)

// The circuit manager's background work (docs/client.md, "Circuits"), run
// by maintainLoop every maintainInterval and whenever a stream used up a
// clean circuit:
//
//   - Preemptive circuits: for each port a stream went to in the last
//     predictionWindow (80 and 443 from the start), keep
//     Config.PreemptiveCircuits clean circuits whose exit allows the port,
//     at most maxCleanCircuits clean circuits in all and at most
//     maxPreemptiveBuilds being built at once.
//   - Closing: a used circuit with no streams left is closed once it is
//     past MaxCircuitDirtiness (it takes no new streams anyway); a clean
//     circuit is closed after cleanCircuitLifetime unused.
//   - Status: every StatusInterval a status line is logged; the status
//     file (state directory only) is rewritten every statusFileInterval.

const (
	maintainInterval     = time.Second
	predictionWindow     = time.Hour
	maxPredictedPorts    = 32
	maxCleanCircuits     = 8
	maxPreemptiveBuilds  = 2
	cleanCircuitLifetime = time.Hour
	statusFileInterval   = 10 * time.Second
)

// kickMaintenance wakes the maintenance loop soon.
func (c *Client) kickMaintenance() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// forgetOldestPort drops the least recently used predicted port. c.mu is
// held.
func (c *Client) forgetOldestPort() {
	var oldest uint16
	var at time.Time
	first := true
	for p, t := range c.predicted {
		if first || t.Before(at) {
			oldest, at, first = p, t, false
		}
	}
	delete(c.predicted, oldest)
}

func (c *Client) maintainLoop(ctx context.Context) {
	t := time.NewTicker(maintainInterval)
	defer t.Stop()
	lastStatus, lastFile := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		c.maintain(ctx)
		if c.cfg.StatusInterval > 0 && time.Since(lastStatus) >= c.cfg.StatusInterval {
			lastStatus, lastFile = time.Now(), time.Now()
			c.logStatus()
		} else if time.Since(lastFile) >= statusFileInterval {
			lastFile = time.Now()
			c.writeStatusFile(c.Status())
		}
	}
}

// maintain closes circuits that are done and starts preemptive builds.
func (c *Client) maintain(ctx context.Context) {
	now := c.cfg.Now()
	var toKill []*clientCirc
	var ports []uint16
	c.mu.Lock()
	for p, at := range c.predicted {
		if now.Sub(at) > predictionWindow {
			delete(c.predicted, p)
		}
	}
	clean := 0
	for _, circ := range c.circs {
		circ.mu.Lock()
		streams := circ.cc.StreamCount()
		circ.mu.Unlock()
		switch {
		case circ.firstUse.IsZero() && now.Sub(circ.built) >= cleanCircuitLifetime:
			toKill = append(toKill, circ)
		case circ.firstUse.IsZero():
			clean++
		case streams == 0 && (circ.retired || now.Sub(circ.firstUse) >= c.cfg.MaxCircuitDirtiness):
			toKill = append(toKill, circ)
		}
	}
	if c.cfg.PreemptiveCircuits > 0 {
		for port := range c.predicted {
			have := 0
			for _, circ := range c.circs {
				if circ.firstUse.IsZero() && c.usableFor(circ, "", port, now) {
					have++
				}
			}
			for ; have < c.cfg.PreemptiveCircuits; have++ {
				if clean+c.building >= maxCleanCircuits || c.building >= maxPreemptiveBuilds {
					break
				}
				c.building++
				ports = append(ports, port)
			}
		}
	}
	c.mu.Unlock()
	for _, circ := range toKill {
		c.kill(circ, true)
	}
	for _, port := range ports {
		c.goLoop(func(ctx context.Context) { c.preemptive(ctx, port) })
	}
}

// preemptive builds one clean circuit for port.
func (c *Client) preemptive(ctx context.Context, port uint16) {
	circ, err := c.buildCircuit(ctx, port)
	if err == nil {
		err = c.addCirc(circ)
	}
	c.mu.Lock()
	c.building--
	c.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		c.log.Debug("preemptive circuit failed", "err", err)
	}
}
