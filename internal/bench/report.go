package bench

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Row is one line of the table: a figure for veil and Tor, the ratio of
// veil to Tor's fastest configuration, and issue 8's target.
type Row struct {
	Figure     string   `json:"figure"`
	Unit       string   `json:"unit"`
	Veil       *float64 `json:"veil"`
	TorFastest *float64 `json:"tor_fastest"`
	TorDefault *float64 `json:"tor_default"`
	Ratio      *float64 `json:"veil_over_tor_fastest"`
	Target     string   `json:"target"`
	Met        *bool    `json:"met"`
}

// Limits of one three-hop circuit on this machine (issue 8): with AES-GCM
// layers (circuit/layer.go) and every node sharing the two cores.
const (
	circuitLimitMBps = 173.0
	bulkLimitShare   = 0.6
)

func pf(x float64) *float64 { return &x }
func pb(x bool) *bool       { return &x }

// table builds the rows from the results.
func table(res *Result) []Row {
	v := res.Veil
	tf, td := res.Tor["fastest"], res.Tor["default"]
	get := func(t *TorResult, f func(*TorResult) float64) *float64 {
		if t == nil || t.Err != "" {
			return nil
		}
		x := f(t)
		if x == 0 {
			return nil
		}
		return &x
	}
	var rows []Row
	// add appends a row; target is checked on the ratio (lower-is-better
	// figures want ratio <= maxRatio, higher-is-better ratio >= minRatio).
	add := func(fig, unit string, veil float64, tor func(*TorResult) float64, target string, check func(veil float64, ratio *float64) *bool) {
		r := Row{Figure: fig, Unit: unit, Veil: pf(veil), Target: target}
		if tor != nil {
			r.TorFastest, r.TorDefault = get(tf, tor), get(td, tor)
			if r.TorFastest != nil && *r.TorFastest > 0 {
				r.Ratio = pf(veil / *r.TorFastest)
			}
		}
		if check != nil {
			r.Met = check(veil, r.Ratio)
		}
		rows = append(rows, r)
	}
	atMost := func(k float64) func(float64, *float64) *bool {
		return func(_ float64, ratio *float64) *bool {
			if ratio == nil {
				return nil
			}
			return pb(*ratio <= k)
		}
	}
	add("start to first download", "s", v.StartToFirstDownloadS, func(t *TorResult) float64 { return t.StartToFirstDownloadS },
		"< 0.1x Tor", func(_ float64, r *float64) *bool {
			if r == nil {
				return nil
			}
			return pb(*r < 0.1)
		})
	add("circuit build, median", "ms", v.CircuitBuildMS.Median, func(t *TorResult) float64 { return t.CircuitBuildMS.Median }, "<= Tor", atMost(1))
	add("circuit build, p90", "ms", v.CircuitBuildMS.P90, func(t *TorResult) float64 { return t.CircuitBuildMS.P90 }, "<= Tor", atMost(1))
	for _, size := range sortedSizes(v) {
		d := v.Downloads[size]
		dl := func(f func(*Download) float64) func(*TorResult) float64 {
			return func(t *TorResult) float64 {
				if td := t.Downloads[size]; td != nil {
					return f(td)
				}
				return 0
			}
		}
		add(size+" first byte, median", "ms", d.TTFBMS.Median, dl(func(d *Download) float64 { return d.TTFBMS.Median }), "<= Tor", atMost(1))
		add(size+" first byte, p90", "ms", d.TTFBMS.P90, dl(func(d *Download) float64 { return d.TTFBMS.P90 }), "<= Tor", atMost(1))
		add(size+" last byte, median", "ms", d.TotalMS.Median, dl(func(d *Download) float64 { return d.TotalMS.Median }), "<= Tor", atMost(1))
		add(size+" last byte, p90", "ms", d.TotalMS.P90, dl(func(d *Download) float64 { return d.TotalMS.P90 }), "<= Tor", atMost(1))
	}
	floor := bulkLimitShare * circuitLimitMBps
	add("one bulk stream", "MB/s", v.Bulk1MBps.Median, func(t *TorResult) float64 { return t.Bulk1MBps },
		fmt.Sprintf(">= 2x Tor and >= %.0f MB/s", floor), func(veil float64, r *float64) *bool {
			return pb(veil >= floor && r != nil && *r >= 2)
		})
	add(fmt.Sprintf("%d bulk streams, total", v.ParallelStreams), "MB/s", v.BulkParallelMBps, nil, "", nil)
	add("relay CPU per relayed GiB", "s", v.CPUsPerGiB, func(t *TorResult) float64 { return t.CPUsPerGiB }, "<= 1/3 Tor", atMost(1.0/3))
	add("resident memory per relay, median", "MiB", v.RSSMiB.Median, func(t *TorResult) float64 { return t.RSSMiB.Median }, "<= 1/4 Tor", atMost(0.25))
	add("memory per idle circuit at a relay (live heap and stacks)", "KiB", v.IdleCircuits.LivePerKiB, nil, "<= 4 KiB plus queues", func(veil float64, _ *float64) *bool { return pb(veil <= 4) })
	add("memory per idle circuit at a relay, RSS", "KiB", v.IdleCircuits.PerKiB, nil, "", nil)
	if d := v.IdleCircuitsLater; d != nil {
		add(fmt.Sprintf("memory per circuit at a relay after %.0f s idle (layer keys dropped; live heap and stacks)", v.IdleWaitSeconds), "KiB", d.LivePerKiB, nil, "", nil)
	}
	add("memory per open stream at a relay (live heap and stacks)", "KiB", v.OpenStreams.LivePerKiB, nil, "", nil)
	add("memory per open stream at a relay, RSS", "KiB", v.OpenStreams.PerKiB, nil, "", nil)
	return rows
}

// sortedSizes returns the download sizes measured, smallest first.
func sortedSizes(v *VeilResult) []string {
	names := slices.Collect(maps.Keys(v.Downloads))
	slices.SortFunc(names, func(a, b string) int { return v.Downloads[a].Bytes - v.Downloads[b].Bytes })
	return names
}

// Markdown renders the table.
func (res *Result) Markdown() string {
	var b strings.Builder
	num := func(p *float64) string {
		switch {
		case p == nil:
			return "-"
		case *p >= 100:
			return fmt.Sprintf("%.0f", *p)
		case *p >= 10:
			return fmt.Sprintf("%.1f", *p)
		}
		return fmt.Sprintf("%.2f", *p)
	}
	fmt.Fprintf(&b, "| figure | unit | veil | Tor fastest | Tor default | veil / Tor fastest | target | met |\n")
	fmt.Fprintf(&b, "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range res.Rows {
		met := "-"
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "no"}[*r.Met]
		}
		ratio := "-"
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2g", *r.Ratio)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Figure, r.Unit, num(r.Veil), num(r.TorFastest), num(r.TorDefault), ratio, r.Target, met)
	}
	m := res.Machine
	fmt.Fprintf(&b, "\n%s; %d cores (%s), %.0f GiB, %s; load average at start %s.\n", m.Date, m.Cores, m.CPU, m.MemGiB, m.GoVersion, m.LoadAvg)
	v := res.Veil
	fmt.Fprintf(&b, "veil: voting interval %s (first consensus early, after %.3f s); client %s; other processes used %s cores by phase; %d bytes downloaded and checked.\n",
		v.VotingInterval, v.FirstConsensusS, v.Client, fmtCores(v.OtherCores), v.BytesVerified)
	for _, name := range []string{"fastest", "default"} {
		t := res.Tor[name]
		if t == nil {
			continue
		}
		if t.Err != "" {
			fmt.Fprintf(&b, "Tor %s: failed: %s\n", name, t.Err)
			continue
		}
		fmt.Fprintf(&b, "Tor %s: EXTRA_TORRC=%q, rows %q, other processes used %.2f cores while measuring; results in %s.\n", name, t.ExtraTorrc, "tor"+t.Rows, t.OtherCores, t.Dir)
	}
	return b.String()
}

func fmtCores(m map[string]float64) string {
	var parts []string
	for _, k := range []string{"before", "circuits", "sizes", "bulk", "parallel", "idle_circuits", "open_streams"} {
		if x, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, x))
		}
	}
	return strings.Join(parts, ", ")
}

// writeResult writes result.json and table.md into dir.
func writeResult(dir string, res *Result) error {
	b, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "table.md"), []byte(res.Markdown()), 0o644)
}
