package client

import (
	"bytes"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/veilnet/veil/directory"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func guardCons(t *testing.T) *directory.Consensus {
	return testConsensus(t, []string{"10.1.0.1:1", "10.2.0.1:1", "10.3.0.1:1", "10.4.0.1:1",
		"10.5.0.1:1", "10.6.0.1:1", "10.7.0.1:1", "10.8.0.1:1", "10.9.0.1:1", "10.10.0.1:1"},
		map[int]string{0: "accept *:*", 1: "accept *:*"})
}

func TestGuardsSampledOnceAndKept(t *testing.T) {
	cons := guardCons(t)
	gs := UpdateGuards(GuardSet{}, cons, t0, rand.Reader)
	if len(gs.Entries) != NumSampledGuards {
		t.Fatalf("sampled %d guards, want %d", len(gs.Entries), NumSampledGuards)
	}
	for i, e := range gs.Entries {
		for _, f := range gs.Entries[:i] {
			if f.ID == e.ID || sameSubnet(cons.Relay(f.ID).Address.Addr(), cons.Relay(e.ID).Address.Addr()) {
				t.Fatal("two guards share a relay or a /16")
			}
		}
		if d := e.Expires.Sub(e.Added); d < GuardLifetime || d > GuardLifetime+GuardLifetimeJitter {
			t.Fatalf("lifetime %v out of range", d)
		}
	}
	// Later consensuses (same relays) change nothing.
	again := UpdateGuards(gs, cons, t0.Add(24*time.Hour), rand.Reader)
	for i := range gs.Entries {
		if again.Entries[i].ID != gs.Entries[i].ID {
			t.Fatal("guard sample changed without a reason")
		}
	}
	// The first guard is every circuit's first hop.
	for range 50 {
		p, err := ChoosePath(&again, cons, t0, rand.Reader, PathRequest{Port: 80, Length: 3})
		if err != nil {
			t.Fatal(err)
		}
		if p[0].ID != gs.Entries[0].ID {
			t.Fatal("first hop is not the first guard")
		}
	}
}

func TestGuardFailoverAndRetry(t *testing.T) {
	cons := guardCons(t)
	gs := UpdateGuards(GuardSet{}, cons, t0, rand.Reader)
	first, second := gs.Entries[0].ID, gs.Entries[1].ID
	gs.MarkFailed(first, t0)
	if g := PickGuard(&gs, cons, t0.Add(time.Minute), nil); g.ID != second {
		t.Fatal("a failing first guard must give way to the second")
	}
	if g := PickGuard(&gs, cons, t0.Add(11*time.Minute), nil); g.ID != first {
		t.Fatal("after its retry delay the first guard is tried again")
	}
	gs.MarkConnected(first, t0.Add(11*time.Minute))
	if gs.Entries[0].Failing(t0.Add(11 * time.Minute)) {
		t.Fatal("a connected guard is not failing")
	}
	// All failing: the one whose retry comes first, not nothing.
	for i, e := range gs.Entries {
		gs.MarkFailed(e.ID, t0.Add(time.Duration(i)*time.Second))
	}
	if g := PickGuard(&gs, cons, t0.Add(time.Minute), nil); g == nil || g.ID != gs.Entries[0].ID {
		t.Fatal("with every guard failing, the earliest retry is used")
	}
	// ... and the sample grows by one per update, up to MaxSampledGuards.
	for range 20 {
		gs = UpdateGuards(gs, cons, t0.Add(time.Minute), rand.Reader)
		for _, e := range gs.Entries {
			gs.MarkFailed(e.ID, t0.Add(time.Minute))
		}
	}
	if len(gs.Entries) != MaxSampledGuards {
		t.Fatalf("sample of %d with every guard down, want the bound %d", len(gs.Entries), MaxSampledGuards)
	}
}

func TestGuardRemovalRules(t *testing.T) {
	cons := guardCons(t)
	gs := UpdateGuards(GuardSet{}, cons, t0, rand.Reader)
	first := gs.Entries[0].ID

	t.Run("lost Guard flag", func(t *testing.T) {
		c2 := *cons
		c2.Relays = append([]directory.RouterStatus(nil), cons.Relays...)
		c2.Relay(first).Flags &^= directory.FlagGuard
		g := UpdateGuards(gs, &c2, t0.Add(time.Hour), rand.Reader)
		if g.Entries[0].UnlistedSince.IsZero() {
			t.Fatal("not marked unlisted")
		}
		if len(g.Entries) != NumSampledGuards+1 {
			t.Fatalf("a replacement should be sampled: %d entries", len(g.Entries))
		}
		if p := PickGuard(&g, &c2, t0.Add(time.Hour), nil); p.ID == first {
			t.Fatal("an unlisted guard was picked")
		}
		// Back within RemoveUnlistedAfter: kept, and first again.
		g = UpdateGuards(g, cons, t0.Add(48*time.Hour), rand.Reader)
		if g.Entries[0].ID != first || !g.Entries[0].UnlistedSince.IsZero() {
			t.Fatal("a guard that came back must be first again")
		}
		// Gone for RemoveUnlistedAfter: removed.
		g = UpdateGuards(g, &c2, t0.Add(49*time.Hour), rand.Reader)
		g = UpdateGuards(g, &c2, t0.Add(49*time.Hour+RemoveUnlistedAfter), rand.Reader)
		for _, e := range g.Entries {
			if e.ID == first {
				t.Fatal("unlisted guard not removed")
			}
		}
	})
	t.Run("expired", func(t *testing.T) {
		g := UpdateGuards(gs, cons, gs.Entries[0].Expires, rand.Reader)
		if g.Entries[0].ID == first {
			t.Fatal("expired guard kept")
		}
	})
	t.Run("unreachable while another works", func(t *testing.T) {
		g := gs.Clone()
		g.MarkFailed(first, t0)
		g.MarkConnected(g.Entries[1].ID, t0.Add(RemoveUnreachableAfter-time.Hour))
		if g2 := UpdateGuards(g, cons, t0.Add(RemoveUnreachableAfter), rand.Reader); g2.Entries[0].ID != first {
			t.Fatal("removed too early")
		}
		g.MarkConnected(g.Entries[1].ID, t0.Add(RemoveUnreachableAfter))
		if g2 := UpdateGuards(g, cons, t0.Add(RemoveUnreachableAfter), rand.Reader); g2.Entries[0].ID == first {
			t.Fatal("a guard failing for RemoveUnreachableAfter while another worked must go")
		}
	})
	t.Run("offline client keeps its guards", func(t *testing.T) {
		g := gs.Clone()
		for _, e := range g.Entries {
			g.MarkFailed(e.ID, t0)
		}
		g2 := UpdateGuards(g, cons, t0.Add(30*24*time.Hour), rand.Reader)
		if g2.Entries[0].ID != first {
			t.Fatal("guards removed while no guard at all was reachable")
		}
	})
}

func TestPathAvoidsFamilyAndPrefersStable(t *testing.T) {
	cons := guardCons(t)
	gs := UpdateGuards(GuardSet{}, cons, t0, rand.Reader)
	g := cons.Relay(gs.Entries[0].ID)
	// Put every other relay but two in the guard's family (declared by the
	// guard only: either side's declaration counts).
	var fam []directory.RelayID
	var free []directory.RelayID
	for i := range cons.Relays {
		r := &cons.Relays[i]
		if r.ID == g.ID {
			continue
		}
		if len(free) < 3 && (r.Flags.Has(directory.FlagExit) || len(free) < 2) {
			free = append(free, r.ID)
			continue
		}
		fam = append(fam, r.ID)
	}
	g.Family = fam
	sortIDs(g.Family)
	for range 100 {
		p, err := ChoosePath(&gs, cons, t0, rand.Reader, PathRequest{Port: 80, Length: 3})
		if err != nil {
			continue // the free relays may not include an exit
		}
		for _, r := range p[1:] {
			if g.InFamily(r.ID) {
				t.Fatal("path holds a family member of its guard")
			}
		}
	}
	g.Family = nil
	// Stable preference: only one non-guard relay is Stable; a long-lived
	// port's middles pick it whenever it fits.
	for i := range cons.Relays {
		cons.Relays[i].Flags &^= directory.FlagStable
	}
	var stableMiddle *directory.RouterStatus
	for i := range cons.Relays {
		r := &cons.Relays[i]
		if r.ID != g.ID && !r.Flags.Has(directory.FlagExit) {
			r.Flags |= directory.FlagStable
			stableMiddle = r
			break
		}
	}
	for range 50 {
		p, err := ChoosePath(&gs, cons, t0, rand.Reader, PathRequest{Port: 22, Stable: true, Length: 3})
		if err != nil {
			t.Fatal(err)
		}
		if p[1].ID != stableMiddle.ID {
			t.Fatal("long-lived stream's middle is not the Stable relay")
		}
	}
}

func sortIDs(ids []directory.RelayID) {
	slices.SortFunc(ids, func(a, b directory.RelayID) int { return bytes.Compare(a[:], b[:]) })
}
