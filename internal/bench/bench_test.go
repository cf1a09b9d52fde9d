package bench

import (
	"math"
	"testing"
)

func TestStat(t *testing.T) {
	s := stat([]float64{5, 1, 4, 2, 3})
	if s.N != 5 || s.Median != 3 || s.Min != 1 || s.Max != 5 || math.Abs(s.P90-4.6) > 1e-9 {
		t.Errorf("stat = %+v, want median 3, p90 4.6 (interpolated, as the Tor harness)", s)
	}
	if s := stat([]float64{1, 2}); s.Median != 1.5 {
		t.Errorf("median of 1, 2 = %v, want 1.5", s.Median)
	}
	if s := stat(nil); s.N != 0 {
		t.Errorf("stat(nil) = %+v", s)
	}
}

func TestMemDelta(t *testing.T) {
	snap := func(rss int64, heap, live, stack, circs float64) relaySnap {
		return relaySnap{proc: []procSample{{RSSKiB: rss}}, met: []relayMetrics{{HeapInuse: heap, HeapLive: live, StackInuse: stack, Circuits: circs}}}
	}
	d := newMemDelta(100, snap(1000, 4<<20, 3<<20, 1<<20, 10), snap(1100, 5<<20, 3<<20+200<<10, 1<<20+512<<10, 110), func(x relayMetrics) float64 { return x.Circuits })
	want := MemDelta{Opened: 100, Count: 100, DeltaKiB: 100, PerKiB: 1, HeapDeltaKiB: 1536, HeapPerKiB: 15.36, LiveDeltaKiB: 712, LivePerKiB: 7.12}
	if d != want {
		t.Errorf("newMemDelta = %+v, want %+v", d, want)
	}
}

func TestParseMetrics(t *testing.T) {
	m := parseMetrics([]byte(`# HELP veil_relay_circuits Circuits through this relay.
# TYPE veil_relay_circuits gauge
veil_relay_circuits 12
veil_relay_exit_bytes_total{direction="from_target"} 2.5e+06
veil_relay_exit_bytes_total{direction="to_target"} 99
veil_relay_exit_streams 3
veil_relay_link_read_bytes_total 1.048576e+06
go_memstats_heap_inuse_bytes 8.192e+06
go_memstats_stack_inuse_bytes 655360
go_memstats_heap_idle_bytes 1
go_gc_heap_live_bytes 4.5e+06
go_gc_cycles_total_gc_cycles_total 17
`))
	want := relayMetrics{LinkReadBytes: 1 << 20, ExitFromTarget: 2.5e6, Circuits: 12, ExitStreams: 3, HeapInuse: 8.192e6, StackInuse: 655360, HeapLive: 4.5e6, GCCycles: 17}
	if m != want {
		t.Errorf("parseMetrics = %+v, want %+v", m, want)
	}
}

// summary is a cut-down summary.json of the Tor harness with both the
// plain and the "_qa" rows.
const summary = `{
 "env": {"first_tor_download_done": "47.5", "bulk_mib": "100"},
 "requested_circuits": {"default": {"n": 20, "build_ms_median": 17.5, "build_ms_p90": 30},
                        "qa": {"n": 20, "build_ms_median": 2.2, "build_ms_p90": 3}},
 "downloads": {
  "tor 50KiB.bin": {"n": 20, "ttfb_ms_median": 34, "ttfb_ms_p90": 40, "total_ms_median": 126, "total_ms_p90": 130, "throughput_MBps_median": 0.4},
  "tor_qa 50KiB.bin": {"n": 20, "ttfb_ms_median": 2.3, "ttfb_ms_p90": 3, "total_ms_median": 2.7, "total_ms_p90": 3.5, "throughput_MBps_median": 19},
  "tor bulk.bin": {"n": 2, "throughput_MBps_median": 7.8},
  "direct 50KiB.bin": {"n": 20, "ttfb_ms_median": 0.5}
 },
 "processes": {
  "auth0": {"rss_MiB": 50, "cpu_s_during_tor_bulk": 0.1},
  "relay6": {"rss_MiB": 80, "cpu_s_during_tor_bulk": 2.0},
  "relay7": {"rss_MiB": 90, "cpu_s_during_tor_bulk": 0.05},
  "exit3": {"rss_MiB": 100, "cpu_s_during_tor_bulk": 1.6},
  "auth1": {"rss_MiB": 60, "cpu_s_during_tor_bulk": 1.8},
  "client9": {"rss_MiB": 40, "cpu_s_during_tor_bulk": 5}
 },
 "cpu_phases": {"sizes_done": {"wall_s": 10, "other_cpu_s": 1}}
}`

func TestTorSummary(t *testing.T) {
	for _, tc := range []struct {
		rows                    string
		circuit, ttfb50, bulkMB float64
	}{
		{"_qa", 2.2, 2.3, 7.8}, // the bulk has no _qa row here: the plain one
		{"", 17.5, 34, 7.8},
	} {
		r := &TorResult{Rows: tc.rows}
		if err := r.parse([]byte(summary)); err != nil {
			t.Fatal(err)
		}
		if r.StartToFirstDownloadS != 47.5 || r.CircuitBuildMS.Median != tc.circuit || r.Downloads["50KiB"].TTFBMS.Median != tc.ttfb50 || r.Bulk1MBps != tc.bulkMB {
			t.Errorf("rows %q: start %v, circuit %v, 50 KiB first byte %v, bulk %v", tc.rows, r.StartToFirstDownloadS, r.CircuitBuildMS.Median, r.Downloads["50KiB"].TTFBMS.Median, r.Bulk1MBps)
		}
		// The three busiest tors (the client excluded): relay6, auth1,
		// exit3: 5.4 CPU-s over 3 relays, 200 MiB relayed each.
		if want := 5.4 / 3 / (200.0 / 1024); math.Abs(r.CPUsPerGiB-want) > 1e-9 {
			t.Errorf("rows %q: CPU per GiB %v, want %v", tc.rows, r.CPUsPerGiB, want)
		}
		if r.RSSMiB.Median != 90 || r.OtherCores != 0.1 {
			t.Errorf("rows %q: RSS median %v (want 90: relays and exits only), other cores %v", tc.rows, r.RSSMiB.Median, r.OtherCores)
		}
	}
}

// FuzzParseMetrics: any endpoint answer parses without panicking.
func FuzzParseMetrics(f *testing.F) {
	f.Add([]byte("veil_relay_circuits 1\nveil_relay_exit_streams x\n"))
	f.Fuzz(func(t *testing.T, b []byte) { parseMetrics(b) })
}

// FuzzTorSummary: any summary.json parses or fails without panicking.
func FuzzTorSummary(f *testing.F) {
	f.Add([]byte(summary))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, rows := range []string{"", "_qa"} {
			r := &TorResult{Rows: rows}
			r.parse(b)
		}
	})
}
