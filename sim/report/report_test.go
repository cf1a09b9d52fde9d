package report

import (
	"encoding/xml"
	"io"
	"regexp"
	"strings"
	"testing"
)

func sample() *Metrics {
	m := NewMetrics()
	m.Scenario, m.Seed, m.VirtualSeconds = "test<&>", 1, 60
	m.BuildSeconds = []float64{0.5, 0.7, 1.2, 0.9}
	f := m.Fetch("50KiB")
	f.Started, f.Completed, f.TTFB, f.Seconds = 2, 2, []float64{0.3, 0.4}, []float64{0.6, 0.8}
	m.Fetch("5MiB").Seconds = []float64{9}
	m.Error("build: timeout")
	m.AddGoodput(3, 1000)
	m.AddGoodput(25, 5000)
	m.RelayStats = []RelayStats{{Name: "r0", RateBytes: 1e6, Utilization: 0.5}, {Name: "r1", RateBytes: 2e6, Malicious: "tag"}}
	m.Consensus = []ConsensusRound{{AtSeconds: 0, Running: 2, Signatures: 3}}
	return m
}

// TestHTMLPlotsAreWellFormedSVG: every <svg> in the report parses as XML,
// and every plot has its axis labels.
func TestHTMLPlotsAreWellFormedSVG(t *testing.T) {
	page := string(HTML(sample(), &RunStats{WallSeconds: 1, Progress: [][2]float64{{0, 0}, {1, 60}}}))
	svgs := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(page, -1)
	if len(svgs) < 8 {
		t.Fatalf("%d plots, want at least 8", len(svgs))
	}
	for i, s := range svgs {
		d := xml.NewDecoder(strings.NewReader(s))
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("plot %d is not well-formed: %v\n%s", i, err, s)
			}
		}
	}
	for _, want := range []string{"build time (seconds)", "time to first byte (seconds)", "goodput (MiB/s)", "busy share of the run (%)", "test&lt;&amp;&gt;"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestFetchLabelsOrderBySize(t *testing.T) {
	m := NewMetrics()
	for _, l := range []string{"web", "5MiB", "bulk", "50KiB", "1MiB"} {
		m.Fetch(l)
	}
	got := strings.Join(m.FetchLabels(), ",")
	if got != "50KiB,1MiB,5MiB,bulk,web" {
		t.Errorf("labels in order %s", got)
	}
}

func TestCDFEndsAtOne(t *testing.T) {
	s := CDF("x", []float64{3, 1, 2})
	if s.X[0] != 1 || s.Y[0] != 0 || s.X[len(s.X)-1] != 3 || s.Y[len(s.Y)-1] != 1 {
		t.Errorf("CDF %v %v", s.X, s.Y)
	}
}
