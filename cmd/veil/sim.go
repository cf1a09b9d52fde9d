package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"
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
// own speed, never inside the simulation.
func runSim(args []string) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	name := fs.String("scenario", "tiny", "built-in scenario ("+strings.Join(scenario.Builtins(), ", ")+") or scenario file")
	seed := fs.Uint64("seed", 0, "random seed (0: the scenario's seed)")
	out := fs.String("out", "", "output directory (default: sim-<scenario>-<seed>)")
	duration := fs.Duration("duration", 0, "override the scenario's virtual duration")
	quiet := fs.Bool("q", false, "no progress output")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
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
	if *out == "" {
		*out = fmt.Sprintf("sim-%s-%d", sc.Name, *seed)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	w, err := world.New(sc, *seed)
	if err != nil {
		return err
	}
	if !*quiet {
		fmt.Printf("veil sim: scenario %s, seed %d, %v of virtual time; set up in %.1fs\n", sc.Name, *seed, sc.Duration.Duration, time.Since(start).Seconds())
	}
	rs := &report.RunStats{Machine: machine()}
	lastPrint := time.Now()
	for !w.Done() {
		w.RunUntil(w.Sim().Now().Add(5 * time.Second))
		if time.Since(lastPrint) >= time.Second || w.Done() {
			lastPrint = time.Now()
			wall := time.Since(start).Seconds()
			virt := w.Sim().Elapsed().Seconds()
			rs.Progress = append(rs.Progress, [2]float64{wall, virt})
			if !*quiet {
				fmt.Printf("\r[%7.1fs wall] virtual %s / %s (%.1fx), %d events, %.0f MiB   ",
					wall, fmtClock(w.Sim().Elapsed()), fmtClock(sc.Duration.Duration), virt/wall, w.Sim().Events(), peakMiB())
			}
		}
	}
	m := w.Metrics()
	wall := time.Since(start).Seconds()
	rs.WallSeconds = wall
	rs.VirtualPerWall = sc.Duration.Seconds() / wall
	rs.PeakMemoryMiB = peakMiB()
	rs.Events = w.Sim().Events()
	rs.EventsPerWall = float64(rs.Events) / wall
	if err := report.WriteDir(*out, m, rs); err != nil {
		return err
	}
	if !*quiet {
		fmt.Printf("\ndone in %.1fs (%.1f virtual s per wall s, peak %.0f MiB): %d/%d circuits built, %d errors\n",
			wall, rs.VirtualPerWall, rs.PeakMemoryMiB, m.CircuitsBuilt, m.CircuitsLaunched, totalErrors(m))
		fmt.Printf("wrote %s/{%s,%s,%s,%s,%s}\n", *out, report.MetricsJSON, report.SamplesCSV, report.RelaysCSV, report.RunJSON, report.ReportHTML)
	}
	return nil
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

// peakMiB is the process's peak resident set (Linux VmHWM), or the memory
// Go has obtained from the system elsewhere.
func peakMiB() float64 {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmHWM:" {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					return kb / 1024
				}
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.Sys) / (1 << 20)
}

func machine() string {
	return fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}
