package world

import (
	"testing"
	"time"
)

// Scale benchmarks: whole scenarios in virtual time. They report virtual
// seconds per wall second and cell events per second besides ns/op.
//
//	go test ./sim/world -run - -bench Scenario -benchtime 1x -cpuprofile cpu.out
//
// The tor-* scenarios carry Tor's real load (docs/simulator.md); these
// benchmarks run a few virtual minutes of them at a tenth of it, like
// `veil sim --load 0.1`.

func benchScenario(b *testing.B, name string, d time.Duration, scale float64) {
	sc := load(b, name)
	if d > 0 {
		sc.Duration.Duration = d
	}
	for i := range sc.Clients {
		if c := &sc.Clients[i]; c.Model == "web" {
			c.Users = max(1, int(float64(c.Users)*scale+0.5))
		}
	}
	var events uint64
	start := time.Now()
	for range b.N {
		w, err := New(sc, 1)
		if err != nil {
			b.Fatal(err)
		}
		w.RunUntil(w.End())
		events += w.Sim().Events()
	}
	wall := time.Since(start).Seconds()
	b.ReportMetric(sc.Duration.Seconds()*float64(b.N)/wall, "virt-s/wall-s")
	b.ReportMetric(float64(events)/wall, "events/s")
}

func BenchmarkScenarioTiny(b *testing.B) { benchScenario(b, "tiny", 0, 1) }

// BenchmarkScenarioTor1pct3m runs the first three virtual minutes of
// tor-1pct at a tenth of its load (veil sim --scenario tor-1pct runs the
// whole hour).
func BenchmarkScenarioTor1pct3m(b *testing.B) { benchScenario(b, "tor-1pct", 3*time.Minute, 0.1) }
