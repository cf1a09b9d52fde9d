package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/veilnet/veil/sim/report"
	"github.com/veilnet/veil/sim/scenario"
	"github.com/veilnet/veil/sim/world"
)

// runSim runs a scenario in virtual time and writes its metrics and
// report. The wall clock is read here, for progress and the simulator's
// own speed, never inside the simulation. Interrupted (ctx done), it
// stops at the next virtual second and writes what it has, marked as
// cut short.
func runSim(ctx context.Context, args []string) error {
	if name, rest, ok := analysisArgs(args); ok {
		return runAnalysis(name, rest) // torps.go
	}
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	name := fs.String("scenario", "tiny", "built-in scenario ("+strings.Join(scenario.Builtins(), ", ")+") or scenario file")
	seed := fs.Uint64("seed", 0, "random seed (0: the scenario's seed)")
	out := fs.String("out", "", "output directory (default: sim-<scenario>-<seed>)")
	duration := fs.Duration("duration", 0, "override the scenario's virtual duration")
	quiet := fs.Bool("q", false, "no progress output")
	load := fs.Float64("load", 1, "scale the users each web client stands for (its traffic) by this factor")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end of the run to this file")
	vopr := fs.Int("vopr", 0, "run N randomized fault runs from --seed (default 1), checking invariants (docs/simulator.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *vopr > 0 {
		return runVOPR(ctx, *vopr, max(*seed, 1), *quiet)
	}
	sc, err := scenario.Load(*name)
	if err != nil {
		return err
	}
	if *duration > 0 {
		sc.Duration.Duration = *duration
	}
	if *seed == 0 {
		*seed = sc.Seed
	}
	if *load <= 0 || *load > 100 {
		return fmt.Errorf("--load must be in (0, 100]")
	}
	if *load != 1 {
		scaleLoad(sc, *load)
	}
	if *out == "" {
		*out = fmt.Sprintf("sim-%s-%d", sc.Name, *seed)
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	start := time.Now()
	w, err := world.New(sc, *seed)
	if err != nil {
		return err
	}
	setup := time.Since(start).Seconds()
	// Progress goes to stderr (stdout stays for the summary), one line
	// rewritten in place on a terminal, a line every 30 s otherwise.
	tty := isTerminal(os.Stderr)
	if !*quiet {
		fmt.Fprintf(os.Stderr, "veil sim: scenario %s, seed %d, %v of virtual time, load %g; set up in %.1fs\n",
			sc.Name, *seed, sc.Duration.Duration, *load, setup)
	}
	rs := &report.RunStats{Machine: machine(), SetupSeconds: setup, Load: *load, GoVersion: runtime.Version()}
	lastSample, lastLine := time.Now(), time.Now()
	for !w.Done() && ctx.Err() == nil {
		w.RunUntil(w.Sim().Now().Add(time.Second))
		now := time.Now()
		if now.Sub(lastSample) < time.Second && !w.Done() {
			continue
		}
		lastSample = now
		p := sample(start, w)
		rs.Progress = append(rs.Progress, [2]float64{p.wall, p.virt})
		rs.Samples = append(rs.Samples, p.ProgressSample)
		if *quiet || (!tty && now.Sub(lastLine) < 30*time.Second && !w.Done()) {
			continue
		}
		lastLine = now
		end := "\n"
		if tty {
			end = "   \r"
		}
		fmt.Fprintf(os.Stderr, "[%s wall] virtual %s / %s (%4.1f%%), %.1f virtual s per wall s, heap %.0f MiB, peak RSS %.0f MiB, %.2fM events%s",
			fmtClock(time.Duration(p.wall*1e9)), fmtClock(w.Sim().Elapsed()), fmtClock(sc.Duration.Duration),
			100*p.virt/sc.Duration.Seconds(), p.VirtualPerWall, p.HeapMiB, p.RSSMiB, float64(w.Sim().Events())/1e6, end)
	}
	if !*quiet && tty {
		fmt.Fprintln(os.Stderr)
	}
	if *memProfile != "" {
		if err := writeHeapProfile(*memProfile); err != nil {
			return err
		}
	}
	m := w.Metrics()
	if !w.Done() {
		m.VirtualSeconds = w.Sim().Elapsed().Seconds()
		m.Events = append(m.Events, report.EventRecord{AtSeconds: m.VirtualSeconds, What: "run interrupted"})
	}
	wall := time.Since(start).Seconds()
	rs.WallSeconds = wall
	rs.VirtualPerWall = m.VirtualSeconds / wall
	rs.PeakMemoryMiB, rs.PeakMemorySource = peakMiB()
	rs.PeakHeapMiB = maxHeap(rs.Samples)
	rs.Events = w.Sim().Events()
	rs.EventsPerWall = float64(rs.Events) / wall
	rs.CPUSeconds, rs.CPUSource = cpuSeconds()
	if err := report.WriteDir(*out, m, rs); err != nil {
		return err
	}
	if !*quiet {
		fmt.Printf("done in %.1fs (%.1f virtual s per wall s, peak %.0f MiB %s): %d/%d circuits built, %d errors\n",
			wall, rs.VirtualPerWall, rs.PeakMemoryMiB, rs.PeakMemorySource, m.CircuitsBuilt, m.CircuitsLaunched, totalErrors(m))
		fmt.Printf("wrote %s/{%s,%s,%s,%s,%s}\n", *out, report.MetricsJSON, report.SamplesCSV, report.RelaysCSV, report.RunJSON, report.ReportHTML)
	}
	if !w.Done() {
		return fmt.Errorf("interrupted at virtual %s of %s; wrote what was simulated to %s", fmtClock(w.Sim().Elapsed()), fmtClock(sc.Duration.Duration), *out)
	}
	return nil
}

// runVOPR runs n VOPR seeds from first, one line per seed, and the
// reproduction of every failing one.
func runVOPR(ctx context.Context, n int, first uint64, quiet bool) error {
	var failed []uint64
	start := time.Now()
	seed := first
	for ; seed < first+uint64(n) && ctx.Err() == nil; seed++ {
		t0 := time.Now()
		r, err := world.RunVOPR(seed, world.NoBug)
		if err != nil {
			return fmt.Errorf("seed %d: %w", seed, err)
		}
		st := r.Stats
		status := "ok"
		if len(r.Violations) > 0 {
			status = fmt.Sprintf("FAIL (%d violations)", len(r.Violations))
			failed = append(failed, seed)
		}
		if !quiet || len(r.Violations) > 0 {
			fmt.Printf("seed %d: %s: %s: %d circuits, %d fetches, %.1f MiB checked, %d detections, peak queue %d cells (%.1fs)\n",
				seed, r.Gen.Summary(), status, st.Circuits, st.Fetches, float64(st.BytesChecked)/(1<<20), st.Detections, st.PeakCells,
				time.Since(t0).Seconds())
		}
		for _, v := range r.Violations {
			fmt.Printf("  %v\n", v)
		}
		if len(r.Violations) > 0 {
			fmt.Printf("  reproduce: veil sim --vopr 1 --seed %d\n", seed)
		}
	}
	ran := seed - first
	fmt.Printf("%d seeds (%d..%d) in %.1fs: %d failed\n", ran, first, seed-1, time.Since(start).Seconds(), len(failed))
	if len(failed) > 0 {
		return fmt.Errorf("invariant violations in seeds %v", failed)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted after %d seeds", ran)
	}
	return nil
}

// scaleLoad multiplies the users of every web client group by f (at
// least one user per client): the same network carrying f times the
// traffic.
func scaleLoad(sc *scenario.Scenario, f float64) {
	for i := range sc.Clients {
		if c := &sc.Clients[i]; c.Model == "web" {
			c.Users = max(1, int(float64(c.Users)*f+0.5))
		}
	}
}

type progress struct {
	wall, virt float64
	report.ProgressSample
}

// sample reads the clock and the memory figures once.
func sample(start time.Time, w *world.World) progress {
	wall := time.Since(start).Seconds()
	virt := w.Sim().Elapsed().Seconds()
	rss, _ := peakMiB()
	return progress{wall: wall, virt: virt, ProgressSample: report.ProgressSample{
		WallSeconds: wall, VirtualSeconds: virt, VirtualPerWall: virt / wall,
		HeapMiB: heapMiB(), RSSMiB: rss,
	}}
}

func maxHeap(ss []report.ProgressSample) float64 {
	m := 0.0
	for _, s := range ss {
		m = max(m, s.HeapMiB)
	}
	return m
}

// heapMiB is the live heap plus garbage not yet collected
// (runtime/metrics /memory/classes/heap/objects:bytes); reading it does
// not stop the world.
func heapMiB() float64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return float64(s[0].Value.Uint64()) / (1 << 20)
}

// runtimeCPUSeconds is the Go runtime's estimate of the CPU time spent
// running Go code and collecting garbage (runtime/metrics). It counts
// time the process was runnable but descheduled, so it overstates the CPU
// used on a busy machine; getrusage is preferred where there is one.
func runtimeCPUSeconds() float64 {
	s := []metrics.Sample{
		{Name: "/cpu/classes/user:cpu-seconds"},
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/cpu/classes/scavenge/total:cpu-seconds"},
	}
	metrics.Read(s)
	t := 0.0
	for _, x := range s {
		if x.Value.Kind() == metrics.KindFloat64 {
			t += x.Value.Float64()
		}
	}
	return t
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func totalErrors(m *report.Metrics) int {
	n := 0
	for _, c := range m.ErrorCauses() {
		n += m.Errors[c]
	}
	return n
}

func fmtClock(d time.Duration) string {
	s := int(d.Seconds())
	return fmt.Sprintf("%02d:%02d:%02d", s/3600, s/60%60, s%60)
}

// peakMiB is the process's peak resident set (Linux VmHWM) and where the
// figure came from; elsewhere, the memory Go has obtained from the system
// (runtime/metrics /memory/classes/total:bytes), which bounds it.
func peakMiB() (float64, string) {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmHWM:" {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					return kb / 1024, "VmHWM"
				}
			}
		}
	}
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(s)
	return float64(s[0].Value.Uint64()) / (1 << 20), "Go runtime total"
}

func machine() string {
	return fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}
