package torps

import (
	"encoding/json"
	"fmt"
	"html"
	"strings"

	"github.com/veilnet/veil/sim/report"
)

// Table is the results as a plain-text table.
func Table(cfg Config, rs []Result) string {
	cfg.Defaults()
	var b strings.Builder
	fmt.Fprintf(&b, "%d clients, %d days, %d adversary guard(s) + %d exit(s), seed %d\n",
		cfg.Clients, cfg.Days, cfg.Relays, cfg.Relays, cfg.Seed)
	fmt.Fprintf(&b, "%-7s %10s %9s %13s %14s %15s %17s\n", "share", "streams", "circuits",
		"streams comp.", "clients comp.", "bad first guard", "median 1st (days)")
	for _, r := range rs {
		fmt.Fprintf(&b, "%6.1f%% %10d %9d %12.3f%% %13.1f%% %14.1f%% %17s\n", 100*r.Share, r.Streams, r.Circuits,
			100*r.StreamRate(), 100*r.ClientRate(), 100*ratio(r.BadGuardClients, r.Clients), median(r.FirstCompromiseDays))
	}
	return b.String()
}

func median(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", xs[len(xs)/2])
}

// JSON is the results, indented.
func JSON(cfg Config, rs []Result) ([]byte, error) {
	cfg.Defaults()
	return json.MarshalIndent(struct {
		Clients int      `json:"clients"`
		Days    int      `json:"days"`
		Relays  int      `json:"adversary_relays_per_position"`
		Session string   `json:"session"`
		Think   string   `json:"think"`
		Port    uint16   `json:"port"`
		Seed    uint64   `json:"seed"`
		Network int      `json:"honest_relays"`
		Results []Result `json:"results"`
	}{cfg.Clients, cfg.Days, cfg.Relays, cfg.Session.String(), cfg.Think.String(), cfg.Port, cfg.Seed, cfg.Network.Count, rs}, "", "  ")
}

// HTML is a self-contained report: the table and the CDF of the time to
// first compromise (the share of all clients compromised by day t), drawn
// with sim/report's plots.
func HTML(cfg Config, rs []Result) []byte {
	cfg.Defaults()
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>veil sim: path compromise (TorPS-style)</title>
<style>
body{font-family:sans-serif;max-width:1360px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
</style></head><body>
<h1>veil sim: path compromise (TorPS-style)</h1>
`)
	fmt.Fprintf(&b, "<p>%d clients over %d days on %d honest relays; each client active %v a day, a stream every %v on average (port %d), circuits reused for 10 minutes; guards and paths chosen by client.UpdateGuards and client.ChoosePath. The adversary adds %d guard relay(s) and %d exit relay(s) holding the given share of guard and of exit weight. Seed %d.</p>\n",
		cfg.Clients, cfg.Days, cfg.Network.Count, cfg.Session, cfg.Think, cfg.Port, cfg.Relays, cfg.Relays, cfg.Seed)
	b.WriteString("<table><tr><th>adversary share</th><th>streams</th><th>circuits</th><th>streams compromised (%)</th><th>clients compromised (%)</th><th>clients with a bad first guard (%)</th><th>median days to first compromise</th></tr>\n")
	var series []report.Series
	for _, r := range rs {
		fmt.Fprintf(&b, "<tr><td>%.1f%%</td><td>%d</td><td>%d</td><td>%.3f</td><td>%.1f</td><td>%.1f</td><td>%s</td></tr>\n",
			100*r.Share, r.Streams, r.Circuits, 100*r.StreamRate(), 100*r.ClientRate(), 100*ratio(r.BadGuardClients, r.Clients), median(r.FirstCompromiseDays))
		series = append(series, firstCompromise(r))
	}
	b.WriteString("</table>\n")
	b.WriteString(report.LinePlot("Time to first compromise (CDF over all clients)", "time since the client started (days)",
		"fraction of clients compromised", series, 0))
	b.WriteString("\n<p>" + html.EscapeString("A client is compromised when one of its streams has a guard and an exit that are both the adversary's.") + "</p>\n</body></html>\n")
	return []byte(b.String())
}

// firstCompromise is the share of all clients compromised by each day:
// a step from 0 at day 0 to ClientRate at the end.
func firstCompromise(r Result) report.Series {
	s := report.Series{Name: fmt.Sprintf("%.1f%% (%d of %d clients)", 100*r.Share, r.CompromisedClients, r.Clients)}
	s.X, s.Y = append(s.X, 0), append(s.Y, 0)
	n := float64(r.Clients)
	days := r.FirstCompromiseDays
	step := max(1, len(days)/400) // at most about 800 points
	for i := 0; i < len(days); i += step {
		j := min(len(days)-1, i+step-1)
		s.X = append(s.X, days[j], days[j])
		s.Y = append(s.Y, float64(i)/n, float64(j+1)/n)
	}
	s.X = append(s.X, float64(r.Days))
	s.Y = append(s.Y, float64(len(r.FirstCompromiseDays))/n)
	return s
}
