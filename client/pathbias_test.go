package client

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

// A guard whose circuits never work (it tags or drops cells, so the next
// hop destroys every circuit) is disabled after PathBiasMinCircuits
// circuits; the next guard in the sample takes over, and the
// disabled guard is neither picked nor sampled again.
func TestPathBiasDisablesASilentGuard(t *testing.T) {
	cons := guardCons(t)
	gs := UpdateGuards(GuardSet{}, cons, t0, rand.Reader)
	bad, next := gs.Entries[0].ID, gs.Entries[1].ID
	for i := 1; i <= PathBiasMinCircuits; i++ {
		disabled := gs.NoteCircuit(bad, false, t0)
		if disabled != (i == PathBiasMinCircuits) {
			t.Fatalf("use %d: disabled=%v", i, disabled)
		}
	}
	if !gs.Entries[0].Disabled() {
		t.Fatal("guard not disabled")
	}
	if g := PickGuard(&gs, cons, t0, nil); g == nil || g.ID != next {
		t.Fatalf("picked %v, want the next guard", g)
	}
	for _, id := range gs.PrimaryGuards() {
		if id == bad {
			t.Fatal("a disabled guard is still primary")
		}
	}
	// It stays in the sample (so it is never sampled again) and the
	// sample does not grow while working guards remain.
	after := UpdateGuards(gs, cons, t0.Add(time.Hour), rand.Reader)
	if len(after.Entries) != len(gs.Entries) || after.Entries[0].ID != bad || !after.Entries[0].Disabled() {
		t.Fatalf("sample after disabling: %d entries, first disabled=%v", len(after.Entries), after.Entries[0].Disabled())
	}
	// Disabling the rest makes UpdateGuards sample a replacement.
	for _, e := range gs.Entries[1:] {
		for range PathBiasMinCircuits {
			gs.NoteCircuit(e.ID, false, t0)
		}
	}
	after = UpdateGuards(gs, cons, t0, rand.Reader)
	if len(after.Entries) != len(gs.Entries)+1 || after.Entries[len(gs.Entries)].Disabled() {
		t.Fatalf("no working replacement sampled: %d entries", len(after.Entries))
	}
	if g := PickGuard(&after, cons, t0, nil); g == nil || g.ID != after.Entries[len(gs.Entries)].ID {
		t.Fatal("the replacement is not picked")
	}
}

// A guard whose circuits fail as often as honest ones do under heavy churn
// (40% of circuits failing) is never disabled, over many thousands of
// circuits (the counts halve at PathBiasScaleAt).
func TestPathBiasKeepsAnHonestGuard(t *testing.T) {
	cons := guardCons(t)
	gs := UpdateGuards(GuardSet{}, cons, t0, rand.Reader)
	id := gs.Entries[0].ID
	for i := range 10000 {
		if gs.NoteCircuit(id, i%5 >= 2, t0) {
			t.Fatalf("an honest guard was disabled after %d circuits", i+1)
		}
		if e := gs.Entries[0]; e.PathAttempts >= PathBiasScaleAt || e.PathSuccesses > e.PathAttempts {
			t.Fatalf("counts out of range: %d/%d", e.PathSuccesses, e.PathAttempts)
		}
	}
	// Fewer than PathBiasMinCircuits circuits are never enough to judge.
	gs = UpdateGuards(GuardSet{}, cons, t0, rand.Reader)
	for range PathBiasMinCircuits - 1 {
		if gs.NoteCircuit(gs.Entries[1].ID, false, t0) {
			t.Fatal("disabled before PathBiasMinCircuits circuits")
		}
	}
}

// The path-bias state survives the state file, and impossible counts are
// refused.
func TestPathBiasStateRoundTrip(t *testing.T) {
	cons := guardCons(t)
	gs := UpdateGuards(GuardSet{}, cons, t0, rand.Reader)
	for range PathBiasMinCircuits {
		gs.NoteCircuit(gs.Entries[0].ID, false, t0)
	}
	gs.NoteCircuit(gs.Entries[1].ID, true, t0)
	st := &State{GuardSet: gs}
	back, err := ParseState(st.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !back.Entries[0].PathBiasSince.Equal(t0) || back.Entries[0].PathAttempts != PathBiasMinCircuits ||
		back.Entries[1].PathSuccesses != 1 || back.Entries[1].Disabled() {
		t.Fatalf("state round trip lost path-bias fields: %+v", back.Entries[:2])
	}
	for _, bad := range [][2]int{{-1, 0}, {1, 2}, {PathBiasScaleAt + 1, 0}} {
		st.Entries[0].PathAttempts, st.Entries[0].PathSuccesses = bad[0], bad[1]
		if _, err := ParseState(st.Encode()); !errors.Is(err, ErrBadState) {
			t.Errorf("counts %v accepted", bad)
		}
	}
}
