package world

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// floodTest: a slow target (40 ms of CPU per handshake, two cores: 50
// handshakes a second) flooded by 4 attackers sending 25 CREATEs a
// second each from the start. The CREATE rate limit lets 20 a second of
// each through after the burst, 80 a second in all: more than the target
// can answer, so its CPU stays saturated for the whole run. The same
// network with the flood after the end of the run is the baseline.
const floodTest = `
name = "flood-test"
duration = "2m"
[relays]
count = 10
exit_fraction = 0.4
bandwidth = { distribution = "fixed", median_mbit = 20 }
handshake_cpu = "40ms"
cpu_cores = 2
[[clients]]
model = "web"
count = 40
page_kib = 50
think = "5s"
start = "5s"
spread = "60s"
[[events]]
at = "AT"
action = "create-flood"
target = "relay0"
attackers = 4
rate = 25
`

// TestCreateFloodDoesNotStopOtherClients: under the flood honest
// clients' fetches keep completing and their circuits through the
// target keep being built, only more slowly. The bound: the target
// serves waiting handshakes round-robin across links, so an honest
// CREATE waits for at most one handshake per other busy link, shared
// among the cores, plus the one in service and the ones already queued
// on its own link: with 4 attacking links and 2 cores, 2 + 1 + 1
// handshakes, plus a few honest ones on the same relay link; we allow
// 8 handshakes (320 ms) for the 90th percentile, and as much again for
// the median build time over the baseline's (the target is one hop of
// the three).
func TestCreateFloodDoesNotStopOtherClients(t *testing.T) {
	const cpu = 0.040
	base := newWorld(t, parse(t, strings.Replace(floodTest, "AT", "1h", 1)), 1)
	base.RunUntil(base.End())
	bf := base.Metrics().Adversary.Floods[0]

	w := newWorld(t, parse(t, strings.Replace(floodTest, "AT", "0s", 1)), 1)
	w.RunUntil(w.End())
	m := w.Metrics()
	f := m.Adversary.Floods[0]
	web := m.Fetch("web")
	t.Logf("flood on %s: sent %d, answered %d, refused %d; fetches: %d done, %d failed; errors %v",
		f.Target, f.Sent, f.Answered, f.Refused, web.Completed, web.Failed, m.Errors)
	t.Logf("builds through the target: baseline median %.3fs (n=%d), flooded median %.3fs p90 %.3fs (n=%d); honest handshake at the target p50 %.3fs p90 %.3fs max %.3fs (n=%d)",
		q(bf.BuildBefore, .5), len(bf.BuildBefore), q(f.BuildDuring, .5), q(f.BuildDuring, .9), len(f.BuildDuring),
		q(f.HandshakeWait, .5), q(f.HandshakeWait, .9), q(f.HandshakeWait, 1), len(f.HandshakeWait))

	// The flood was real: the target did thousands of handshakes for
	// it, as many as its CPU allows, and refused the excess.
	if f.Answered < 4000 || f.Refused == 0 {
		t.Fatalf("the target answered %d flood CREATEs and refused %d; the test needs a saturating flood", f.Answered, f.Refused)
	}
	if len(f.BuildDuring) < 10 || len(bf.BuildBefore) < 10 {
		t.Fatalf("only %d (baseline %d) honest builds through the target", len(f.BuildDuring), len(bf.BuildBefore))
	}
	// Honest clients were not stopped.
	if web.Completed < 200 || web.Failed > web.Completed/50 {
		t.Errorf("%d fetches completed, %d failed", web.Completed, web.Failed)
	}
	if p90 := q(f.HandshakeWait, .9); p90 > 8*cpu {
		t.Errorf("honest handshakes at the target: p90 %.3fs, want at most %.3fs", p90, 8*cpu)
	}
	if d := q(f.BuildDuring, .5) - q(bf.BuildBefore, .5); d > 8*cpu {
		t.Errorf("median build through the target grew by %.3fs, want at most %.3fs", d, 8*cpu)
	}
	// And the flood had an effect the metrics show.
	if q(f.HandshakeWait, .5) < 2*cpu || q(f.BuildDuring, .5) <= q(bf.BuildBefore, .5) {
		t.Errorf("no queueing at the flooded target: honest handshake median %.3fs", q(f.HandshakeWait, .5))
	}
}

// q is the q-quantile of xs (NaN if empty).
func q(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}
