package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/veilnet/veil/sim/report"
	"github.com/veilnet/veil/sim/scenario"
)

// TestScaleLoad: --load scales the users of web clients only, never below
// one.
func TestScaleLoad(t *testing.T) {
	sc, err := scenario.Load("tor-1pct")
	if err != nil {
		t.Fatal(err)
	}
	scaleLoad(sc, 0.1)
	for _, c := range sc.Clients {
		want := 1
		if c.Model == "web" {
			want = 10
		}
		if c.Users != want {
			t.Errorf("%s: %d users after --load 0.1, want %d", c.Name, c.Users, want)
		}
	}
	scaleLoad(sc, 0.001)
	for _, c := range sc.Clients {
		if c.Users != 1 {
			t.Errorf("%s: %d users, want at least 1", c.Name, c.Users)
		}
	}
}

// TestSimWritesRunStatsApart: a run writes the machine's figures (speed,
// memory and where the memory figure came from) to run.json, and two
// runs with one seed still give byte-identical metrics.json.
func TestSimWritesRunStatsApart(t *testing.T) {
	dir := t.TempDir()
	var metrics [2][]byte
	for i := range metrics {
		out := filepath.Join(dir, string(rune('a'+i)))
		if err := runSim(context.Background(), []string{"--scenario", "tiny", "--duration", "40s", "-q", "--out", out}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(out, report.MetricsJSON))
		if err != nil {
			t.Fatal(err)
		}
		metrics[i] = b
		var rs report.RunStats
		b, err = os.ReadFile(filepath.Join(out, report.RunJSON))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &rs); err != nil {
			t.Fatal(err)
		}
		if rs.VirtualPerWall <= 0 || rs.PeakMemoryMiB <= 0 || rs.PeakMemorySource == "" || len(rs.Samples) == 0 || rs.Load != 1 {
			t.Errorf("run.json incomplete: %+v", rs)
		}
	}
	if !bytes.Equal(metrics[0], metrics[1]) {
		t.Error("two runs of tiny with one seed wrote different metrics.json")
	}
}
