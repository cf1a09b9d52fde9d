package authority

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
)

// earlyInterval is long enough that no regular round starts during a
// test: the clock below starts one second into a round, so the regular
// first round's vote time is 57 s away.
const earlyInterval = 60 * time.Second

// earlyClock returns a clock that reads one second after an aligned
// round start and runs at real speed from there.
func earlyClock() func() time.Time { return clockAt(time.Second) }

// clockAt returns a clock that reads at after an aligned round start and
// runs at real speed from there.
func clockAt(at time.Duration) func() time.Time {
	real := time.Now()
	iv := earlyInterval.Nanoseconds()
	target := time.Unix(0, (real.UnixNano()/iv+1)*iv).Add(at)
	off := target.Sub(real)
	return func() time.Time { return time.Now().Add(off) }
}

// startEarly runs the authorities whose indexes are given with
// EarlyRelays set; tests of the relays in failing fail.
func (tn *testNet) startEarly(t *testing.T, now func() time.Time, early int, failing map[string]bool, which ...int) ([]*Authority, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var auths []*Authority
	var wg sync.WaitGroup
	for _, i := range which {
		a, err := New(Config{
			Identity: tn.keys[i], Network: tn.net, Name: tn.net.Authorities[i].Name, Listener: tn.listeners[i],
			Interval: earlyInterval, VoteDelay: time.Second, SigDelay: time.Second, Logger: testLogger(t),
			Now: now, EarlyRelays: early,
			Tester: func(_ context.Context, r directory.ReachabilityTarget) error {
				if failing[r.Address.String()] {
					return errors.New("unreachable")
				}
				return nil
			},
		})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		auths = append(auths, a)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
	}
	return auths, func() { cancel(); wg.Wait() }
}

func uploadAll(t *testing.T, c *dirclient.Client, tn *testNet, raws [][]byte, which ...int) {
	t.Helper()
	for _, raw := range raws {
		for _, j := range which {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := c.UploadDescriptor(ctx, tn.net.Authorities[j].Address, raw); err != nil {
				t.Fatalf("upload to %d: %v", j, err)
			}
			cancel()
		}
	}
}

// TestEarlyFirstRound: with EarlyRelays, three authorities publish the
// consensus of the round already under way once the relays passed their
// tests, long before the regular first round; a relay whose test failed
// is not Running in it.
func TestEarlyFirstRound(t *testing.T) {
	tn := newTestNet(t, 3)
	now := earlyClock()
	start := now()
	raws, ids := relayDescriptors(t, 3, start.Truncate(time.Second))
	// relay2's address fails every test (relayDescriptors: 127.12.0.1).
	auths, stop := tn.startEarly(t, now, 2, map[string]bool{"127.12.0.1:9001": true}, 0, 1, 2)
	defer stop()
	client := dirclient.New(nil)
	defer client.CloseIdleConnections()
	uploadAll(t, client, tn, raws, 0, 1, 2)
	for i, a := range auths {
		waitFor(t, "an early consensus", a.HasConsensus)
		raw, err := a.Consensus()
		if err != nil {
			t.Fatal(err)
		}
		c, err := directory.VerifyConsensus(raw, tn.net, now())
		if err != nil {
			t.Fatalf("auth%d: %v", i, err)
		}
		if c.ValidAfter.After(start) {
			t.Errorf("auth%d: consensus valid after %v, later than the start %v: not the early round", i, c.ValidAfter, start)
		}
		for j := 0; j < 2; j++ {
			if r := c.Relay(ids[j]); r == nil || !r.Flags.Has(directory.FlagRunning) {
				t.Errorf("auth%d: relay%d missing or not Running", i, j)
			}
		}
		if r := c.Relay(ids[2]); r != nil && r.Flags.Has(directory.FlagRunning) {
			t.Errorf("auth%d: relay2 is Running though its reachability test failed", i)
		}
	}
}

// TestEarlyRoundNeedsMajority: a lone authority of three runs its early
// round but must not publish.
func TestEarlyRoundNeedsMajority(t *testing.T) {
	tn := newTestNet(t, 3)
	tn.listeners[1].Close()
	tn.listeners[2].Close()
	now := earlyClock()
	raws, _ := relayDescriptors(t, 2, now().Truncate(time.Second))
	auths, stop := tn.startEarly(t, now, 2, nil, 0)
	defer stop()
	client := dirclient.New(nil)
	defer client.CloseIdleConnections()
	uploadAll(t, client, tn, raws, 0)
	waitFor(t, "the early round to end", func() bool {
		auths[0].mu.Lock()
		defer auths[0].mu.Unlock()
		return auths[0].roundsDone >= 1
	})
	if auths[0].HasConsensus() {
		t.Fatal("a single authority of three published a consensus in its early round")
	}
}

// TestEarlyRoundLateInInterval: an early round made after the next
// round's vote time (VA+58.3 s; vote time VA+58 s) is followed by that
// round's consensus, not one at VA+120 s with a stale gap before it.
func TestEarlyRoundLateInInterval(t *testing.T) {
	tn := newTestNet(t, 3)
	now := clockAt(58300 * time.Millisecond)
	start := now()
	iv := earlyInterval.Nanoseconds()
	va := time.Unix(0, start.UnixNano()/iv*iv).UTC()
	raws, _ := relayDescriptors(t, 2, start.Truncate(time.Second))
	auths, stop := tn.startEarly(t, now, 2, nil, 0, 1, 2)
	defer stop()
	client := dirclient.New(nil)
	defer client.CloseIdleConnections()
	uploadAll(t, client, tn, raws, 0, 1, 2)
	for i, a := range auths {
		waitFor(t, "a consensus after the early one", func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.publishedVA.After(va)
		})
		a.mu.Lock()
		got := a.publishedVA
		a.mu.Unlock()
		if want := va.Add(earlyInterval); !got.Equal(want) {
			t.Errorf("auth%d: consensus after the early round %v is for %v, want %v", i, va, got, want)
		}
	}
}
