package report

import (
	"fmt"
	"html"
	"sort"
	"strings"
)

// maxRelayBars bounds the relay utilization chart; larger networks show
// an evenly spaced sample of relays, by capacity.
const maxRelayBars = 60

// HTML returns the self-contained report: tables and inline SVG plots.
// rs may be nil (then the simulator's speed is left out).
func HTML(m *Metrics, rs *RunStats) []byte {
	var b strings.Builder
	esc := html.EscapeString
	fmt.Fprintf(&b, `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>veil sim: %s</title>
<style>
body{font-family:sans-serif;max-width:1360px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots svg{border:1px solid #eee}
</style></head><body>
<h1>veil sim: %s</h1>
`, esc(m.Scenario), esc(m.Scenario))
	fmt.Fprintf(&b, "<p>Seed %d; %.0f virtual seconds; %d relays, %d clients, %d authorities; %d cell deliveries simulated.</p>\n",
		m.Seed, m.VirtualSeconds, m.Relays, m.Clients, m.Authorities, m.CellEvents)

	b.WriteString("<h2>Summary</h2>\n<table><tr><th>what</th><th>count</th><th>ok</th><th>failed</th><th>median (s)</th><th>p90 (s)</th></tr>\n")
	fmt.Fprintf(&b, "<tr><td>circuit builds</td><td>%d</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td></tr>\n",
		m.CircuitsLaunched, m.CircuitsBuilt, m.CircuitsLaunched-m.CircuitsBuilt, quantile(m.BuildSeconds, .5), quantile(m.BuildSeconds, .9))
	for _, l := range m.FetchLabels() {
		f := m.Fetches[l]
		fmt.Fprintf(&b, "<tr><td>fetch %s (transfer time)</td><td>%d</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td></tr>\n",
			esc(l), f.Started, f.Completed, f.Failed, quantile(f.Seconds, .5), quantile(f.Seconds, .9))
	}
	b.WriteString("</table>\n")
	if rs != nil {
		src := rs.PeakMemorySource
		if src == "" {
			src = "-"
		}
		fmt.Fprintf(&b, "<h2>Simulator</h2>\n<p>Measured on the machine that ran it (run.json); these figures are not part of the reproducible metrics.</p>\n"+
			"<table><tr><th>wall time (s)</th><th>set-up (s)</th><th>CPU (s)</th><th>virtual s per wall s</th><th>peak memory (MiB)</th><th>peak heap (MiB)</th><th>events</th><th>events per wall s</th><th>load</th><th>machine</th></tr>\n"+
			"<tr><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.0f (%s)</td><td>%.0f</td><td>%d</td><td>%.0f</td><td>%g</td><td>%s</td></tr></table>\n",
			rs.WallSeconds, rs.SetupSeconds, rs.CPUSeconds, rs.VirtualPerWall, rs.PeakMemoryMiB, esc(src), rs.PeakHeapMiB,
			rs.Events, rs.EventsPerWall, rs.Load, esc(rs.Machine))
	}

	b.WriteString("<h2>Circuits and fetches</h2>\n<div class=\"plots\">\n")
	b.WriteString(CDFPlot("Circuit build time (CDF)", "build time (seconds)", "fraction of builds", []Series{CDF("circuits", m.BuildSeconds)}))
	var ttfb []Series
	for _, l := range m.FetchLabels() {
		ttfb = append(ttfb, CDF(l, m.Fetches[l].TTFB))
	}
	b.WriteString(CDFPlot("Time to first byte (CDF)", "time to first byte (seconds)", "fraction of fetches", ttfb))
	for _, l := range m.FetchLabels() {
		b.WriteString(CDFPlot("Transfer time, "+l+" (CDF)", "time to last byte (seconds)", "fraction of fetches", []Series{CDF(l, m.Fetches[l].Seconds)}))
	}
	if gp := fetchGoodput(m); len(gp) > 0 {
		b.WriteString(CDFPlot("Goodput of each fetch (CDF)", "fetch size / transfer time (Mbit/s)", "fraction of fetches", gp))
	}
	b.WriteString("</div>\n<h2>Network</h2>\n<div class=\"plots\">\n")
	gp := Series{Name: "all clients"}
	for i, v := range m.Goodput {
		gp.X = append(gp.X, (float64(i)+0.5)*m.GoodputIntervalSeconds/60)
		gp.Y = append(gp.Y, v/m.GoodputIntervalSeconds/(1<<20))
	}
	b.WriteString(LinePlot(fmt.Sprintf("Client goodput (%.0f s bins)", m.GoodputIntervalSeconds), "virtual time (minutes)", "goodput (MiB/s)", []Series{gp}, 0))
	causes := m.ErrorCauses()
	counts := make([]float64, len(causes))
	for i, c := range causes {
		counts[i] = float64(m.Errors[c])
	}
	b.WriteString(BarPlot("Errors by cause", "count", causes, counts))
	b.WriteString(BarPlot("Error rate by cause", "% of circuit builds (build:) or fetches (others)", causes, errorRates(m, causes)))
	labels, util := relayBars(m.RelayStats)
	b.WriteString(BarPlot("Relay uplink utilization (by capacity)", "busy share of the run (%)", labels, util))
	var allUtil []float64
	for _, r := range m.RelayStats {
		allUtil = append(allUtil, 100*r.Utilization)
	}
	b.WriteString(LinePlot("Relay uplink utilization, all relays (CDF)", "busy share of the run (%)", "fraction of relays", []Series{CDF("relays", allUtil)}, 1))
	cs := Series{Name: "Running relays"}
	for _, c := range m.Consensus {
		cs.X = append(cs.X, c.AtSeconds/60)
		cs.Y = append(cs.Y, float64(c.Running))
	}
	b.WriteString(LinePlot("Relays listed Running in each consensus", "virtual time (minutes)", "relays", []Series{cs}, 0))
	b.WriteString("</div>\n")
	if rs != nil && len(rs.Samples) > 1 {
		b.WriteString("<h2>Simulator speed and memory</h2>\n<div class=\"plots\">\n")
		p, v := Series{Name: "virtual time reached"}, Series{Name: "average since the start"}
		heap, rss := Series{Name: "Go heap (runtime/metrics)"}, Series{Name: "peak resident set (" + rs.PeakMemorySource + ")"}
		// Short runs in seconds, long ones in minutes.
		unit, div := "wall time (seconds)", 1.0
		if rs.WallSeconds > 180 {
			unit, div = "wall time (minutes)", 60
		}
		for _, s := range rs.Samples {
			x := s.WallSeconds / div
			p.X, p.Y = append(p.X, x), append(p.Y, s.VirtualSeconds/60)
			v.X, v.Y = append(v.X, x), append(v.Y, s.VirtualPerWall)
			heap.X, heap.Y = append(heap.X, x), append(heap.Y, s.HeapMiB)
			rss.X, rss.Y = append(rss.X, x), append(rss.Y, s.RSSMiB)
		}
		b.WriteString(LinePlot("Simulator progress", unit, "virtual time (minutes)", []Series{p}, 0))
		b.WriteString(LinePlot("Simulator speed", unit, "virtual seconds per wall second", []Series{v}, 0))
		b.WriteString(LinePlot("Simulator memory", unit, "memory (MiB)", []Series{heap, rss}, 0))
		b.WriteString("</div>\n")
	}

	a := m.Adversary
	fmt.Fprintf(&b, "<h2>Adversary</h2>\n<table><tr><th>circuits through malicious relays</th><th>tampered</th><th>detected at the next hop</th><th>cells accepted after tampering</th></tr>\n"+
		"<tr><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr></table>\n", a.CircuitsThrough, a.Tampered, a.DetectedNextHop, a.DeliveredAfter)
	b.WriteString("<h2>Events</h2>\n<table><tr><th>virtual time (s)</th><th>event</th></tr>\n")
	for _, e := range m.Events {
		fmt.Fprintf(&b, "<tr><td>%.1f</td><td>%s</td></tr>\n", e.AtSeconds, esc(e.What))
	}
	b.WriteString("</table>\n</body></html>\n")
	return []byte(b.String())
}

// relayBars picks at most maxRelayBars relays, fastest first, and returns
// their labels and utilization in percent.
func relayBars(rs []RelayStats) ([]string, []float64) {
	idx := make([]int, len(rs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return rs[idx[i]].RateBytes > rs[idx[j]].RateBytes })
	step := max(1, (len(idx)+maxRelayBars-1)/maxRelayBars)
	var labels []string
	var vals []float64
	for i := 0; i < len(idx); i += step {
		r := rs[idx[i]]
		l := fmt.Sprintf("%s %.0f Mbit/s", r.Name, r.RateBytes*8/1e6)
		if r.Malicious != "" {
			l += " (" + r.Malicious + ")"
		}
		labels = append(labels, l)
		vals = append(vals, 100*r.Utilization)
	}
	return labels, vals
}

// fetchGoodput returns, for each fetch kind named by a size of at least
// 1 MiB, the CDF of size over transfer time in Mbit/s (what OnionPerf
// and tornettools call a client's goodput). Smaller fetches are left
// out: their time is mostly latency, not throughput.
func fetchGoodput(m *Metrics) []Series {
	var out []Series
	for _, l := range m.FetchLabels() {
		size := labelBytes(l)
		if size < 1<<20 || size >= 1<<62 {
			continue
		}
		var mbit []float64
		for _, t := range m.Fetches[l].Seconds {
			if t > 0 {
				mbit = append(mbit, float64(size)*8/1e6/t)
			}
		}
		out = append(out, CDF(l, mbit))
	}
	return out
}

// errorRates gives each cause's count as a percentage of what it could
// have hit: circuit launches for "build:" causes, fetches started for
// the others.
func errorRates(m *Metrics, causes []string) []float64 {
	fetches := 0
	for _, f := range m.Fetches {
		fetches += f.Started
	}
	out := make([]float64, len(causes))
	for i, c := range causes {
		den := fetches
		if strings.HasPrefix(c, "build:") {
			den = m.CircuitsLaunched
		}
		if den > 0 {
			out[i] = 100 * float64(m.Errors[c]) / float64(den)
		}
	}
	return out
}

// quantile formats the q-quantile of xs (nearest rank), or "-".
func quantile(xs []float64, q float64) string {
	if len(xs) == 0 {
		return "-"
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := min(len(s)-1, int(q*float64(len(s))))
	return fmt.Sprintf("%.3f", s[i])
}
