package world

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veilnet/veil/sim/scenario"
)

// TestVOPR runs randomized fault runs and fails on any invariant
// violation, printing the one-line reproduction. VEIL_VOPR_SEEDS=N runs N
// seeds (default 3) from VEIL_VOPR_SEED (default 1).
func TestVOPR(t *testing.T) {
	n, first := 3, uint64(1)
	if s := os.Getenv("VEIL_VOPR_SEEDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("VEIL_VOPR_SEEDS=%q: want a positive count", s)
		}
		n = v
	}
	if s := os.Getenv("VEIL_VOPR_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("VEIL_VOPR_SEED=%q: %v", s, err)
		}
		first = v
	}
	for seed := first; seed < first+uint64(n); seed++ {
		r, err := RunVOPR(seed, NoBug)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		t.Logf("seed %d: %s: %+v", seed, r.Gen.Summary(), r.Stats)
		for _, v := range r.Violations {
			t.Errorf("%v\n  reproduce: veil sim --vopr 1 --seed %d", v, seed)
		}
		if r.Stats.Circuits == 0 || r.Stats.BytesChecked == 0 {
			t.Errorf("seed %d checked nothing: %+v", seed, r.Stats)
		}
	}
}

// TestVOPRDeterministic: a seed draws the same scenario and gives the
// same metrics bytes; another seed draws another scenario.
func TestVOPRDeterministic(t *testing.T) {
	a, err := RunVOPR(2, NoBug)
	if err != nil {
		t.Fatal(err)
	}
	b, err := RunVOPR(2, NoBug)
	if err != nil {
		t.Fatal(err)
	}
	if a.Gen.TOML != b.Gen.TOML || !bytes.Equal(a.Metrics, b.Metrics) {
		t.Fatal("seed 2 gave two different runs")
	}
	c, err := VOPRScenario(3)
	if err != nil {
		t.Fatal(err)
	}
	if c.TOML == a.Gen.TOML {
		t.Fatal("seeds 2 and 3 drew the same scenario")
	}
}

// TestVOPRGeneratorCoverage: over 300 seeds (drawn, not run) the
// generator produces every kind of fault, every traffic model and the
// whole range of network sizes, and every scenario it draws is valid.
func TestVOPRGeneratorCoverage(t *testing.T) {
	seen := map[string]bool{}
	minRelays, maxRelays := 1000, 0
	for seed := uint64(1); seed <= 300; seed++ {
		g, err := VOPRScenario(seed)
		if err != nil {
			t.Fatal(err)
		}
		sc := g.Scenario
		minRelays, maxRelays = min(minRelays, sc.Relays.Count), max(maxRelays, sc.Relays.Count)
		for _, c := range sc.Clients {
			seen["model "+c.Model] = true
		}
		for _, a := range sc.Adversary {
			seen["adversary "+a.Behaviour] = true
		}
		for _, e := range sc.Events {
			seen["event "+e.Action] = true
			if e.Action == "crash" && e.For.Duration > 0 {
				seen["crash and restart"] = true
			}
			if e.Action == "partition" || e.Action == "create-flood" {
				if end := e.At.Duration + e.For.Duration; end >= g.Traffic {
					t.Errorf("seed %d: %s ends at %v, after the clients stop (%v)", seed, e.Action, end, g.Traffic)
				}
			}
		}
		if sc.Network.Loss > 0 {
			seen["loss"] = true
		}
		if sc.Duration.Duration != g.Traffic+VOPRDrain {
			t.Errorf("seed %d: duration %v, want traffic %v + drain", seed, sc.Duration.Duration, g.Traffic)
		}
	}
	for _, k := range []string{"model onionperf", "model bulk", "model web", "adversary tag", "adversary drop",
		"adversary delay", "adversary passive", "event crash", "crash and restart", "event partition",
		"event authority-offline", "event create-flood", "loss"} {
		if !seen[k] {
			t.Errorf("300 seeds never drew %s", k)
		}
	}
	if minRelays != 6 || maxRelays != 30 {
		t.Errorf("relay counts span %d..%d, want 6..30", minRelays, maxRelays)
	}
}

// voprSelfTest is tiny for 90 s of traffic plus the drain, with a tagging
// relay when tag is set.
func voprSelfTest(t *testing.T, tag bool) *scenario.Scenario {
	t.Helper()
	sc := load(t, "tiny")
	sc.Duration.Duration = 90*time.Second + VOPRDrain
	if tag {
		doc := `
name = "vopr-tag"
duration = "150s"
[network]
regions = ["eu", "na"]
latency_ms = [[10, 45], [45, 20]]
[relays]
count = 8
exit_fraction = 0.4
bandwidth = { distribution = "fixed", median_mbit = 20 }
[servers]
count = 2
[[clients]]
name = "web"
model = "web"
count = 3
page_kib = 100
think = "5s"
[[adversary]]
count = 2
behaviour = "tag"
skip = 1
bandwidth_mbit = 100
`
		var err error
		if sc, err = scenario.Parse([]byte(doc)); err != nil {
			t.Fatal(err)
		}
	}
	return sc
}

func hasViolation(r *VOPRResult, inv string) bool {
	for _, v := range r.Violations {
		if v.Invariant == inv {
			return true
		}
	}
	return false
}

// TestVOPRCatchesCorruptByte: an exit that corrupts one byte of each
// response is caught by the content check (and the same run without the
// bug is clean, so it is the bug that is caught).
func TestVOPRCatchesCorruptByte(t *testing.T) {
	sc := voprSelfTest(t, false)
	clean, err := RunVOPRScenario(sc, 1, NoBug)
	if err != nil {
		t.Fatal(err)
	}
	if len(clean.Violations) != 0 || clean.Stats.BytesChecked == 0 {
		t.Fatalf("without the bug: %v, %+v", clean.Violations, clean.Stats)
	}
	r, err := RunVOPRScenario(sc, 1, BugCorruptByte)
	if err != nil {
		t.Fatal(err)
	}
	if !hasViolation(r, "content") {
		t.Fatalf("a corrupted byte went unnoticed: %v", r.Violations)
	}
	if !strings.Contains(r.Violations[0].What, "offset 1000") {
		t.Errorf("violation names the wrong place: %v", r.Violations[0])
	}
}

// TestVOPRCatchesSkippedTeardown: with tagging relays, hops detect
// modifications and the run is clean; when the detecting relay keeps the
// circuit instead of destroying it, both the teardown check and the
// after-detect check (it goes on accepting cells) fire.
func TestVOPRCatchesSkippedTeardown(t *testing.T) {
	sc := voprSelfTest(t, true)
	clean, err := RunVOPRScenario(sc, 1, NoBug)
	if err != nil {
		t.Fatal(err)
	}
	if len(clean.Violations) != 0 || clean.Stats.Detections == 0 {
		t.Fatalf("without the bug: %v, %+v", clean.Violations, clean.Stats)
	}
	r, err := RunVOPRScenario(sc, 1, BugSkipTeardown)
	if err != nil {
		t.Fatal(err)
	}
	if !hasViolation(r, "teardown") || !hasViolation(r, "after-detect") {
		t.Fatalf("a relay that kept a tampered circuit went unnoticed: %v", r.Violations)
	}
}
