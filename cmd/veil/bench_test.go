package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestMain lets the bench test re-execute this test binary as `veil relay
// run`: with VEIL_TEST_MAIN=1 it is the veil command.
func TestMain(m *testing.M) {
	if os.Getenv("VEIL_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchSmall runs `veil bench --no-tor` with tiny sizes on loopback
// (six relay processes) and checks that result.json holds every figure
// and that every downloaded byte was checked.
func TestBenchSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a network of relay processes")
	}
	t.Setenv("VEIL_TEST_MAIN", "1") // for the relay processes
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := runBench(ctx, []string{"--no-tor", "--out", out, "--quiet-wait", "0",
		"--sizes", "1KiB,8KiB", "--bulk", "64KiB", "--fetches", "3", "--circuits", "3", "--bulk-reps", "2",
		"--parallel", "2", "--idle-circuits", "20", "--idle-wait", "0", "--open-streams", "10"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Veil struct {
			Start     float64 `json:"start_to_first_download_s"`
			Consensus float64 `json:"first_consensus_s"`
			Circuit   struct{ N int }
			Downloads map[string]struct {
				TTFB  struct{ N int } `json:"ttfb_ms"`
				Total struct{ N int } `json:"total_ms"`
			} `json:"downloads"`
			Bulk      struct{ N int } `json:"bulk_1_stream_MBps"`
			Parallel  float64         `json:"bulk_parallel_MBps"`
			CPU       *float64        `json:"relay_cpu_s_per_GiB"`
			RelayBulk []struct {
				OnCircuit bool `json:"on_circuit"`
			} `json:"relay_bulk"`
			RelayMem []struct {
				RSS float64 `json:"rss_MiB"`
			} `json:"relay_memory"`
			Idle struct {
				Count float64 `json:"count_at_relays"`
			} `json:"idle_circuits"`
			Streams struct {
				Count float64 `json:"count_at_relays"`
			} `json:"open_streams"`
			Verified int64 `json:"bytes_verified"`
		} `json:"veil"`
		Table []struct {
			Figure string
			Veil   *float64
		} `json:"table"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	v := res.Veil
	if v.Consensus <= 0 || v.Start < v.Consensus {
		t.Errorf("start figures: first consensus %v s, first download %v s", v.Consensus, v.Start)
	}
	for _, size := range []string{"1KiB", "8KiB"} {
		if d, ok := v.Downloads[size]; !ok || d.TTFB.N != 3 || d.Total.N != 3 {
			t.Errorf("%s: %+v, want 3 timed downloads", size, d)
		}
	}
	if v.Bulk.N != 2 || v.Parallel <= 0 {
		t.Errorf("bulk: %d single-stream downloads, %v MB/s in parallel", v.Bulk.N, v.Parallel)
	}
	on := 0
	for _, r := range v.RelayBulk {
		if r.OnCircuit {
			on++
		}
	}
	// 128 KiB may cost less than one 10 ms CPU tick: the figure must be
	// there, not positive.
	if on != 3 || v.CPU == nil || *v.CPU < 0 {
		t.Errorf("bulk CPU: %d relays on the circuit (want 3), %v s/GiB", on, v.CPU)
	}
	if len(v.RelayMem) != 6 || v.RelayMem[0].RSS <= 0 {
		t.Errorf("relay memory: %+v", v.RelayMem)
	}
	// Each of the 20 idle circuits has three hops (a circuit of another
	// client may close meanwhile); each stream is counted at its exit.
	if v.Idle.Count < 40 || v.Idle.Count > 60 || v.Streams.Count != 10 {
		t.Errorf("memory phases counted %v circuit hops (want 40..60) and %v streams (want 10)", v.Idle.Count, v.Streams.Count)
	}
	// 1 KiB: first download + warm-up + 3; 8 KiB: warm-up + 3; bulk:
	// 2 + 2 in parallel; 2 more 1 KiB warming the parallel circuits.
	want := int64((1+1+3+2)*1024 + (1+3)*8192 + 4*65536)
	if v.Verified != want {
		t.Errorf("bytes verified: %d, want %d", v.Verified, want)
	}
	for _, r := range res.Table {
		if r.Veil == nil {
			t.Errorf("table: %q has no veil figure", r.Figure)
		}
	}
}
