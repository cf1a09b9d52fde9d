package world

import (
	"testing"
	"time"

	"github.com/veilnet/veil/sim/simnet"
)

// TestAuthorityOutageKeepsConsensusFresh runs the built-in
// authority-outage scenario (one authority of three offline from 5m to
// 45m) and checks, minute by minute, that the clients' consensus is
// always fresh; that every ten-minute round publishes one, with two
// signatures during the outage and three otherwise; and that no fetch
// fails.
func TestAuthorityOutageKeepsConsensusFresh(t *testing.T) {
	w := newWorld(t, load(t, "authority-outage"), 1)
	for !w.Done() {
		w.RunUntil(w.Sim().Now().Add(time.Minute))
		if now := w.Sim().Now(); !w.cons.IsFresh(now) {
			t.Fatalf("at %v the clients' consensus (valid after %v) is not fresh", now.Sub(simnet.Epoch), w.cons.ValidAfter.Sub(simnet.Epoch))
		}
	}
	m := w.Metrics()
	sigs := map[float64]int{}
	for _, c := range m.Consensus {
		sigs[c.AtSeconds] = c.Signatures
	}
	for at := 0.0; at < 3600; at += 600 {
		want := 3
		if at > 300 && at < 2700 {
			want = 2
		}
		if sigs[at] != want {
			t.Errorf("round at %vs: %d signatures, want %d", at, sigs[at], want)
		}
	}
	if len(m.Errors) != 0 {
		t.Errorf("errors: %v", m.Errors)
	}
	for _, l := range m.FetchLabels() {
		if f := m.Fetches[l]; f.Completed < 10 || f.Failed != 0 {
			t.Errorf("%s: %d completed, %d failed", l, f.Completed, f.Failed)
		}
	}
}

const crashReturn = `
name = "crash-return"
duration = "22m"
[network]
regions = ["eu", "na"]
latency_ms = [[10, 45], [45, 20]]
jitter = 0.1
[relays]
count = 20
exit_fraction = 0.4
bandwidth = { distribution = "lognormal", median_mbit = 20, sigma = 1.0, min_mbit = 5, max_mbit = 200 }
[[clients]]
model = "web"
count = 10
page_kib = 100
think = "10s"
spread = "20s"
[[events]]
at = "3m"
action = "crash"
fraction = 0.3
for = "8m"
`

// TestThirtyPercentCrashAndReturn: 30% of the relays crash at 3m and come
// back at 11m. Clients keep fetching while the consensus still lists the
// dead relays (their circuits through them fail and are rebuilt), almost
// nothing fails once the 10m consensus drops them, and the 20m consensus
// lists every relay again.
func TestThirtyPercentCrashAndReturn(t *testing.T) {
	w := newWorld(t, parse(t, crashReturn), 5)
	at := func(m int) time.Time { return simnet.Epoch.Add(time.Duration(m) * time.Minute) }
	w.RunUntil(at(3).Add(time.Second))
	if n := countDown(w); n != 6 {
		t.Fatalf("%d relays down after the crash, want 6", n)
	}
	crash := *w.m.Fetch("web")
	w.RunUntil(at(10))
	stale := *w.m.Fetch("web") // the consensus still lists the dead
	builtStale := w.m.CircuitsBuilt
	w.RunUntil(at(11))
	fresh := *w.m.Fetch("web")
	w.RunUntil(w.End())
	m := w.Metrics()
	end := m.Fetch("web")
	t.Logf("web fetches: by 3m %d/%d, 3m-10m %d done %d failed, 10m-11m %d/%d, 11m-22m %d/%d; errors %v",
		crash.Completed, crash.Failed, stale.Completed-crash.Completed, stale.Failed-crash.Failed,
		fresh.Completed-stale.Completed, fresh.Failed-stale.Failed, end.Completed-fresh.Completed, end.Failed-fresh.Failed, m.Errors)
	if done, failed := stale.Completed-crash.Completed, stale.Failed-crash.Failed; done < 50 || failed > done/5 {
		t.Errorf("3m-10m, dead relays still listed: %d fetches done, %d failed", done, failed)
	}
	if done, failed := end.Completed-stale.Completed, end.Failed-stale.Failed; done < 100 || failed > done/50 {
		t.Errorf("after 10m: %d fetches done, %d failed", done, failed)
	}
	if m.Errors["build: destroyed"]+m.Errors["build: guard unreachable"]+m.Errors["build: timeout"] == 0 {
		t.Error("no circuit build failed: did the crash touch anything?")
	}
	if builtStale == 0 || m.CircuitsBuilt <= builtStale {
		t.Errorf("circuits built: %d by 10m, %d in all", builtStale, m.CircuitsBuilt)
	}
	running := map[float64]int{}
	for _, c := range m.Consensus {
		running[c.AtSeconds] = c.Running
	}
	if running[600] != 14 || running[1200] != 20 {
		t.Errorf("Running relays: %d at 10m (want 14), %d at 20m (want 20)", running[600], running[1200])
	}
}
