package report

import (
	"bytes"
	"strings"
	"testing"
)

// TestErrorRates: build causes are shares of circuit launches, the rest
// shares of fetches started.
func TestErrorRates(t *testing.T) {
	m := NewMetrics()
	m.CircuitsLaunched = 200
	m.Fetch("web").Started = 40
	m.Fetch("50KiB").Started = 10
	m.Errors = map[string]int{"build: timeout": 5, "fetch: timeout": 2}
	got := errorRates(m, m.ErrorCauses())
	if got[0] != 2.5 || got[1] != 4 {
		t.Errorf("rates %v, want [2.5 4]", got)
	}
}

// TestFetchGoodput: one CDF per fetch kind of at least 1 MiB, in Mbit/s.
func TestFetchGoodput(t *testing.T) {
	m := NewMetrics()
	m.Fetch("50KiB").Seconds = []float64{1}
	m.Fetch("web").Seconds = []float64{1}
	m.Fetch("1MiB").Seconds = []float64{8.388608, 0}
	gp := fetchGoodput(m)
	if len(gp) != 1 || !strings.HasPrefix(gp[0].Name, "1MiB (n=1)") || gp[0].X[0] != 1 {
		t.Fatalf("goodput series %+v", gp)
	}
}

// TestSimulatorSpeedAndMemoryShown: the report plots the run's speed and
// memory, and the metrics JSON carries none of it (run.json does).
func TestSimulatorSpeedAndMemoryShown(t *testing.T) {
	m := sample()
	rs := &RunStats{WallSeconds: 300, PeakMemoryMiB: 512, PeakMemorySource: "VmHWM", Samples: []ProgressSample{
		{WallSeconds: 100, VirtualSeconds: 1200, VirtualPerWall: 12, HeapMiB: 100, RSSMiB: 200},
		{WallSeconds: 300, VirtualSeconds: 3600, VirtualPerWall: 12, HeapMiB: 300, RSSMiB: 512},
	}}
	page := string(HTML(m, rs))
	for _, want := range []string{"Simulator speed", "virtual seconds per wall second", "Simulator memory", "memory (MiB)",
		"peak resident set (VmHWM)", "wall time (minutes)", "Error rate by cause"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	j, err := m.JSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"wall", "memory", "heap"} {
		if bytes.Contains(j, []byte(leak)) {
			t.Errorf("metrics.json mentions %q: machine figures belong in run.json", leak)
		}
	}
}

// TestCDFPlotClipsHeavyTail: a CDF with a far outlier is drawn to its
// 99th percentile and says so; one without is drawn whole.
func TestCDFPlotClipsHeavyTail(t *testing.T) {
	xs := make([]float64, 200)
	for i := range xs {
		xs[i] = 1 + float64(i)/100
	}
	if p := CDFPlot("T", "x (s)", "y", []Series{CDF("a", xs)}); strings.Contains(p, "99th") {
		t.Error("clipped a CDF without a tail")
	}
	xs[199] = 300
	p := CDFPlot("T", "x (s)", "y", []Series{CDF("a", xs)})
	if !strings.Contains(p, "to the 99th percentile") || strings.Contains(p, ">300<") {
		t.Errorf("heavy tail not clipped:\n%s", p)
	}
}
