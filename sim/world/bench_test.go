package world

import (
	"testing"
	"time"
)

// Scale benchmarks: whole scenarios in virtual time. They report virtual
// seconds per wall second and cell events per second besides ns/op.
//
//	go test ./sim/world -run - -bench Scenario -benchtime 1x

func benchScenario(b *testing.B, name string, d time.Duration) {
	sc := load(b, name)
	if d > 0 {
		sc.Duration.Duration = d
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

func BenchmarkScenarioTiny(b *testing.B) { benchScenario(b, "tiny", 0) }

// BenchmarkScenarioTor1pct5m runs the first five virtual minutes of
// tor-1pct (veil sim --scenario tor-1pct runs the whole hour).
func BenchmarkScenarioTor1pct5m(b *testing.B) { benchScenario(b, "tor-1pct", 5*time.Minute) }
