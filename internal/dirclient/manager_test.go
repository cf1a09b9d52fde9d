package dirclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/directory/dirtest"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func newTestManager(t *testing.T, n *dirtest.Net, clock *fakeClock) *Manager {
	t.Helper()
	m, err := NewManager(ManagerConfig{Network: n.Network, Now: clock.Now, Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func firstDoc(docs [][]byte) []byte {
	for _, d := range docs {
		if d != nil {
			return d
		}
	}
	return nil
}

func TestManagerKeepsLastValidUntilExpiry(t *testing.T) {
	n := dirtest.New(3, 4, dirtest.Options{})
	n.Upload()
	va, docs := n.Round()
	clock := &fakeClock{t: va}
	m := newTestManager(t, n, clock)
	if _, err := m.Accept(firstDoc(docs)); err != nil {
		t.Fatal(err)
	}
	c := m.Consensus()
	if c == nil || len(c.Relays) != 4 || len(c.Relays[0].OnionKeyPQ) != directory.OnionKeyPQSize {
		t.Fatal("no complete consensus held")
	}
	// Two of three authorities go down: no new consensus appears.
	n.Online[1], n.Online[2] = false, false
	for range 2 {
		if _, docs := n.Round(); firstDoc(docs) != nil {
			t.Fatal("a minority published")
		}
		clock.Set(n.Now)
		if m.Consensus() != c {
			t.Fatal("the last valid consensus was dropped before it expired")
		}
	}
	clock.Set(c.ValidUntil)
	if m.Consensus() != c {
		t.Fatal("dropped at valid-until")
	}
	clock.Set(c.ValidUntil.Add(time.Second))
	if m.Consensus() != nil || m.Raw() != nil {
		t.Fatal("an expired consensus is still served")
	}
}

func TestManagerRefusesRollbackAndReplay(t *testing.T) {
	n := dirtest.New(3, 4, dirtest.Options{})
	n.Upload()
	va1, docs1 := n.Round()
	old := firstDoc(docs1)
	_, docs2 := n.Round()
	clock := &fakeClock{t: n.Now}
	m := newTestManager(t, n, clock)
	newer, err := m.Accept(firstDoc(docs2))
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Accept(old)
	if err != nil || got != newer || m.Consensus() != newer {
		t.Fatalf("an older consensus replaced a newer one: %v", err)
	}
	// Long after: the old one is refused as expired (or skewed clock).
	clock.Set(va1.Add(3*dirtest.Schedule.Interval + time.Minute))
	if _, err := newTestManager(t, n, clock).Accept(old); !errors.Is(err, directory.ErrExpired) {
		t.Fatalf("replayed expired consensus: %v", err)
	}
}

func TestManagerClockSkew(t *testing.T) {
	n := dirtest.New(3, 4, dirtest.Options{})
	n.Upload()
	va, docs := n.Round()
	doc := firstDoc(docs)
	for _, tc := range []struct {
		name  string
		local time.Time
		skew  bool
	}{
		{"a bit slow", va.Add(-30 * time.Minute), false},
		{"two hours slow", va.Add(-2 * time.Hour), true},
		{"a day fast", va.Add(24 * time.Hour), true},
	} {
		clock := &fakeClock{t: tc.local}
		_, err := newTestManager(t, n, clock).Accept(doc)
		var skew *ClockSkewError
		if errors.As(err, &skew) != tc.skew {
			t.Errorf("%s: got %v", tc.name, err)
		}
		if tc.skew {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

func TestManagerBootstrapFromServerThenCache(t *testing.T) {
	n := dirtest.New(3, 4, dirtest.Options{})
	n.Upload()
	_, docs := n.Round()
	doc := firstDoc(docs)
	var hits sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.Host, true)
		_, _ = w.Write(doc)
	}))
	defer srv.Close()
	for i := range n.Network.Authorities {
		n.Network.Authorities[i].Address = srv.Listener.Addr().String()
		if i > 0 {
			n.Network.Authorities[i].Address = fmt.Sprintf("127.0.0.1:%d", i) // refused
		}
	}
	clock := &fakeClock{t: n.Now}
	m := newTestManager(t, n, clock)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Consensus() == nil {
		t.Fatal("Bootstrap returned without a consensus")
	}
	if next := m.NextFetch(); next.Before(m.Consensus().FreshUntil) || !next.Before(m.Consensus().ValidUntil) {
		t.Errorf("next fetch %v outside [fresh-until, valid-until)", next)
	}
}
