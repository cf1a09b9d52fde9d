package client

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTripAndPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := ensureStateDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v", fi.Mode().Perm())
	}
	cons := guardCons(t)
	st := State{GuardSet: UpdateGuards(GuardSet{}, cons, t0, rand.Reader), BuildTimesMS: []int64{12, 34}}
	st.Entries[1].FailedSince = t0.Add(time.Minute)
	if err := writeFileAtomic(dir, StateFileName, st.Encode()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, StateFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, %v", fi.Mode().Perm(), err)
	}
	got, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Encode()) != string(st.Encode()) {
		t.Fatalf("round trip changed the state:\n%s\n%s", got.Encode(), st.Encode())
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d files", len(ents))
	}
	// A directory others can read is refused.
	os.Chmod(dir, 0o755)
	if err := ensureStateDir(dir); err == nil {
		t.Fatal("a 0755 state directory was accepted")
	}
	// A missing file is an empty state.
	empty, err := loadState(t.TempDir())
	if err != nil || len(empty.Entries) != 0 {
		t.Fatalf("missing state: %v %v", empty, err)
	}
}

func TestParseStateRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":   "guards",
		"version":    `{"version":2}`,
		"duplicate":  `{"version":1,"guards":[{"id":"` + strings.Repeat("ab", 32) + `"},{"id":"` + strings.Repeat("ab", 32) + `"}]}`,
		"short id":   `{"version":1,"guards":[{"id":"abcd"}]}`,
		"build time": `{"version":1,"build_times_ms":[-1]}`,
		"huge":       `{"version":1,"x":"` + strings.Repeat("a", maxStateFile) + `"}`,
	} {
		if _, err := ParseState([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzParseState: invariant: ParseState never panics; what it accepts
// re-encodes to a state it accepts again, with the same guards.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"version":1,"guards":[],"build_times_ms":[5]}`))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(b)
		if err != nil {
			return
		}
		again, err := ParseState(st.Encode())
		if err != nil {
			t.Fatalf("re-encoded state rejected: %v", err)
		}
		if len(again.Entries) != len(st.Entries) {
			t.Fatal("guards changed")
		}
	})
}
