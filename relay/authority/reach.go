package authority

import (
	"context"
	"crypto/rand"
	"net"
	"sync"
	"time"

	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/linkio"
)

// Reachability testing (docs/spec/directory.md, "Flags"): the authority
// completes a link handshake with every relay it holds a descriptor for,
// against the descriptor's address and link key, at least twice per
// voting interval, and votes Running only for relays whose latest test
// succeeded.
const (
	// MaxConcurrentTests bounds reachability tests running at once.
	MaxConcurrentTests = 32
	// MaxTestTimeout bounds one reachability test.
	MaxTestTimeout = 10 * time.Second
	// maxReachTick bounds how long the tester sleeps between passes.
	maxReachTick = 5 * time.Second
)

// Tester tests whether a relay is reachable: it returns nil only after
// completing a link handshake that proves the relay holds t.LinkKey at
// t.Address.
type Tester func(ctx context.Context, t directory.ReachabilityTarget) error

// LinkTester returns the real Tester: a Noise XK link handshake
// (internal/linkio.Dial) from a fresh throwaway key, closed at once.
func LinkTester() Tester {
	d := &net.Dialer{}
	return func(ctx context.Context, t directory.ReachabilityTarget) error {
		local, err := crypto.GenerateStaticKey(rand.Reader)
		if err != nil {
			return err
		}
		c, err := linkio.Dial(ctx, d, t.Address.String(), &local, t.LinkKey, rand.Reader)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// testTimeout is the bound on one test: a quarter interval, at most
// MaxTestTimeout.
func (a *Authority) testTimeout() time.Duration {
	return min(MaxTestTimeout, a.sched.Interval/4)
}

// reachLoop tests relays until ctx is done.
func (a *Authority) reachLoop(ctx context.Context) {
	tick := min(maxReachTick, a.sched.Interval/8)
	sem := make(chan struct{}, MaxConcurrentTests)
	var wg sync.WaitGroup
	defer wg.Wait()
	inFlight := map[directory.RelayID]bool{}
	var mu sync.Mutex // guards inFlight
	for {
		a.mu.Lock()
		targets := a.core.ReachabilityTargets(a.now())
		a.mu.Unlock()
		for _, t := range targets {
			mu.Lock()
			busy := inFlight[t.ID]
			inFlight[t.ID] = true
			mu.Unlock()
			if busy {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				tctx, cancel := context.WithTimeout(ctx, a.testTimeout())
				err := a.tester(tctx, t)
				cancel()
				if ctx.Err() != nil {
					return
				}
				a.mu.Lock()
				a.core.RecordReachability(t, err == nil, a.now())
				if a.reached != nil && err == nil {
					a.reached[t.ID] = true
				} else if a.reached != nil {
					delete(a.reached, t.ID)
				}
				a.mu.Unlock()
				if err == nil {
					select {
					case a.reachedKick <- struct{}{}:
					default:
					}
				}
				mu.Lock()
				delete(inFlight, t.ID)
				mu.Unlock()
				if err != nil {
					a.log.Debug("relay unreachable", "relay", t.ID.String(), "err", err)
				}
			}()
		}
		timer := time.NewTimer(tick)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-a.reachKick:
			timer.Stop()
		}
	}
}
