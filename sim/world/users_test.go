package world

import (
	"bytes"
	"testing"
	"time"

	"github.com/veilnet/veil/sim/simnet"
)

const usersTest = `
name = "users-test"
duration = "3m"
[relays]
count = 10
exit_fraction = 0.5
bandwidth = { distribution = "fixed", median_mbit = 50 }
[[clients]]
model = "web"
count = 2
users = 6
page_kib = 50
think = "5s"
`

// TestWebUsersAreIsolatedSessions: a web client standing for several
// users runs one session per user, and a circuit that carried one
// session's streams never carries another's.
func TestWebUsersAreIsolatedSessions(t *testing.T) {
	w := newWorld(t, parse(t, usersTest), 1)
	sessions := map[*Client]map[int]bool{}
	for step := time.Duration(1); step <= 18; step++ {
		w.RunUntil(simnet.Epoch.Add(step * 10 * time.Second))
		for _, c := range w.clients {
			for _, circ := range c.circs {
				for _, f := range circ.fetches {
					if f.iso != circ.iso {
						t.Fatalf("%s: a fetch of session %d rides a circuit of session %d", c.name, f.iso, circ.iso)
					}
					if sessions[c] == nil {
						sessions[c] = map[int]bool{}
					}
					sessions[c][f.iso] = true
				}
			}
		}
	}
	m := w.Metrics()
	for _, c := range w.clients {
		if len(sessions[c]) < 4 {
			t.Errorf("%s: fetches of only %d sessions seen in flight", c.name, len(sessions[c]))
		}
	}
	if f := m.Fetch("web"); f.Completed < 50 || f.Failed > 0 || m.CircuitsBuilt < 12 {
		t.Errorf("%d fetches completed, %d failed, %d circuits built", f.Completed, f.Failed, m.CircuitsBuilt)
	}
}

// TestWebUsersDeterministic: many sessions per client (their start
// times, isolation and parallel builds) still give byte-identical
// metrics for a seed.
func TestWebUsersDeterministic(t *testing.T) {
	sc := parse(t, usersTest)
	sc.Duration.Duration = time.Minute
	if a, b := metricsJSON(t, sc, 4), metricsJSON(t, sc, 4); !bytes.Equal(a, b) {
		t.Fatal("two runs with seed 4 gave different metrics")
	}
}
