package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// TorConfig says how to run ../shared/peers/tor/run.sh.
type TorConfig struct {
	Script string // path of run.sh
	// Configs are run one after the other: "fastest" (the Vanilla
	// scheduler; its figures come from the delayed-ACKs-off "_qa" rows)
	// and "default" (KIST, the plain rows).
	Configs []string
}

// TorResult is what one run of the Tor harness measured, in veil's terms.
type TorResult struct {
	Config     string `json:"config"`
	ExtraTorrc string `json:"extra_torrc"`
	Dir        string `json:"dir"`
	Err        string `json:"error,omitempty"`
	// Rows says which of the harness's rows the figures come from:
	// "_qa" (delayed ACKs off on loopback) or "" (as configured).
	Rows                  string               `json:"rows"`
	StartToFirstDownloadS float64              `json:"start_to_first_download_s"`
	CircuitBuildMS        Stat                 `json:"circuit_build_ms"`
	Downloads             map[string]*Download `json:"downloads"`
	Bulk1MBps             float64              `json:"bulk_1_stream_MBps"`
	RelayBulk             []RelayBulk          `json:"relay_bulk"`
	CPUsPerGiB            float64              `json:"relay_cpu_s_per_GiB"`
	RSSMiB                Stat                 `json:"relay_rss_MiB"`
	OtherCores            float64              `json:"other_cores_while_measuring"`
}

// torConfigs maps a configuration name to its EXTRA_TORRC and rows.
var torConfigs = map[string]struct{ extra, rows string }{
	"fastest": {"Schedulers Vanilla", "_qa"},
	"default": {"", ""},
}

// runTor runs the harness once per configuration, in order; a failed run
// is reported in its TorResult and does not stop the others.
func runTor(ctx context.Context, cfg *Config) map[string]*TorResult {
	out := map[string]*TorResult{}
	for _, name := range cfg.Tor.Configs {
		tc, ok := torConfigs[name]
		r := &TorResult{Config: name, ExtraTorrc: tc.extra, Rows: tc.rows}
		out[name] = r
		if !ok {
			r.Err = "unknown configuration (want fastest or default)"
			continue
		}
		base := cfg.Out
		if base == "" {
			base = os.TempDir()
		}
		dir, err := filepath.Abs(filepath.Join(base, "tor-"+name))
		if err != nil {
			r.Err = err.Error()
			continue
		}
		os.RemoveAll(dir)
		r.Dir = dir
		cfg.Progress(fmt.Sprintf("running the Tor harness (%s: EXTRA_TORRC=%q), 3-6 minutes; log in %s/harness.log", name, tc.extra, dir))
		if err := runHarness(ctx, cfg, tc.extra, dir); err != nil {
			r.Err = err.Error()
			cfg.Progress("Tor harness failed: " + r.Err)
			continue
		}
		if err := r.load(filepath.Join(dir, "summary.json")); err != nil {
			r.Err = err.Error()
		}
	}
	return out
}

func runHarness(ctx context.Context, cfg *Config, extra, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "harness.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, "bash", cfg.Tor.Script)
	cmd.Env = append(os.Environ(), "OUT="+dir, "EXTRA_TORRC="+extra,
		fmt.Sprintf("REPS=%d", cfg.Fetches), fmt.Sprintf("CIRCS=%d", cfg.Circuits),
		fmt.Sprintf("BULK_MIB=%d", max(1, cfg.BulkSize>>20)), fmt.Sprintf("BULK_REPS=%d", cfg.BulkReps))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bench: %s: %w (see %s)", cfg.Tor.Script, err, logf.Name())
	}
	return nil
}

// load reads the harness's summary.json.
func (r *TorResult) load(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := r.parse(b); err != nil {
		return fmt.Errorf("bench: %s: %w", path, err)
	}
	return nil
}

// parse fills r from the bytes of a summary.json (lib/summarize.py).
func (r *TorResult) parse(b []byte) error {
	var s struct {
		Env               map[string]string `json:"env"`
		RequestedCircuits map[string]struct {
			N      int      `json:"n"`
			Median *float64 `json:"build_ms_median"`
			P90    *float64 `json:"build_ms_p90"`
		} `json:"requested_circuits"`
		Downloads map[string]struct {
			N          int      `json:"n"`
			TTFBMedian *float64 `json:"ttfb_ms_median"`
			TTFBP90    *float64 `json:"ttfb_ms_p90"`
			TotMedian  *float64 `json:"total_ms_median"`
			TotP90     *float64 `json:"total_ms_p90"`
			MBps       *float64 `json:"throughput_MBps_median"`
		} `json:"downloads"`
		Processes map[string]struct {
			RSS     float64  `json:"rss_MiB"`
			BulkCPU *float64 `json:"cpu_s_during_tor_bulk"`
		} `json:"processes"`
		CPUPhases map[string]struct {
			Wall  float64 `json:"wall_s"`
			Other float64 `json:"other_cpu_s"`
		} `json:"cpu_phases"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	f := func(p *float64) float64 {
		if p == nil {
			return 0
		}
		return *p
	}
	r.StartToFirstDownloadS, _ = strconv.ParseFloat(s.Env["first_tor_download_done"], 64)
	circ, ok := s.RequestedCircuits[map[string]string{"_qa": "qa", "": "default"}[r.Rows]]
	if !ok {
		circ = s.RequestedCircuits["default"]
	}
	r.CircuitBuildMS = Stat{N: circ.N, Median: f(circ.Median), P90: f(circ.P90)}
	r.Downloads = map[string]*Download{}
	for key, d := range s.Downloads {
		path, file, _ := strings.Cut(key, " ")
		_, hasRow := s.Downloads["tor"+r.Rows+" "+file]
		if path != "tor"+r.Rows && (path != "tor" || hasRow) {
			continue // another path, or a plain row where the wanted one exists
		}
		name := strings.TrimSuffix(file, ".bin")
		r.Downloads[name] = &Download{TTFBMS: Stat{N: d.N, Median: f(d.TTFBMedian), P90: f(d.TTFBP90)},
			TotalMS: Stat{N: d.N, Median: f(d.TotMedian), P90: f(d.TotP90)}, MBps: Stat{N: d.N, Median: f(d.MBps)}}
	}
	if b := r.Downloads["bulk"]; b != nil {
		r.Bulk1MBps = b.MBps.Median
	}
	// CPU per relayed GiB: the harness measures CPU around its plain
	// (not _qa) bulk downloads. The three tors that worked hardest then
	// are the circuit's relays (authorities relay too in Tor's network).
	bulkMiB, _ := strconv.ParseFloat(s.Env["bulk_mib"], 64)
	bytes := float64(s.Downloads["tor bulk.bin"].N) * bulkMiB * (1 << 20)
	var rss []float64
	for name, p := range s.Processes {
		if strings.HasPrefix(name, "relay") || strings.HasPrefix(name, "exit") {
			rss = append(rss, p.RSS)
		}
		if p.BulkCPU != nil && !strings.HasPrefix(name, "client") && (strings.HasPrefix(name, "auth") || strings.HasPrefix(name, "relay") || strings.HasPrefix(name, "exit")) {
			r.RelayBulk = append(r.RelayBulk, RelayBulk{Name: name, CPUs: *p.BulkCPU})
		}
	}
	r.RSSMiB = stat(rss)
	slices.SortFunc(r.RelayBulk, func(a, b RelayBulk) int {
		if a.CPUs > b.CPUs {
			return -1
		}
		if a.CPUs < b.CPUs {
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	var sum float64
	for i := range min(3, len(r.RelayBulk)) {
		r.RelayBulk[i].OnCircuit = true
		sum += r.RelayBulk[i].CPUs
	}
	if bytes > 0 && len(r.RelayBulk) >= 3 {
		r.CPUsPerGiB = sum / 3 / (bytes / (1 << 30))
	}
	var wall, other float64
	for _, p := range s.CPUPhases {
		wall += p.Wall
		other += p.Other
	}
	if wall > 0 {
		r.OtherCores = other / wall
	}
	return nil
}

// field returns the value of the first "key<spaces>: value" line of text.
func field(text, key string) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
