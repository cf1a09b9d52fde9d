package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Files written by WriteDir.
const (
	MetricsJSON = "metrics.json" // Metrics: reproducible for a seed
	SamplesCSV  = "samples.csv"  // every sample, one per row
	RelaysCSV   = "relays.csv"   // one row per relay
	RunJSON     = "run.json"     // RunStats: depends on the machine
	ReportHTML  = "report.html"  // the self-contained report
)

// JSON returns m as indented JSON. Maps are written with sorted keys, so
// equal metrics give equal bytes.
func (m *Metrics) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// SamplesCSV returns every sample as rows "metric,label,value".
func (m *Metrics) SamplesCSV() []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	row := func(metric, label string, v float64) {
		w.Write([]string{metric, label, strconv.FormatFloat(v, 'g', -1, 64)})
	}
	w.Write([]string{"metric", "label", "value"})
	for _, v := range m.BuildSeconds {
		row("build_seconds", "", v)
	}
	for _, l := range m.FetchLabels() {
		f := m.Fetches[l]
		for _, v := range f.TTFB {
			row("ttfb_seconds", l, v)
		}
		for _, v := range f.Seconds {
			row("transfer_seconds", l, v)
		}
		row("fetches_started", l, float64(f.Started))
		row("fetches_completed", l, float64(f.Completed))
		row("fetches_failed", l, float64(f.Failed))
	}
	for _, c := range m.ErrorCauses() {
		row("errors", c, float64(m.Errors[c]))
	}
	for i, v := range m.Goodput {
		row("goodput_bytes", strconv.FormatFloat(float64(i)*m.GoodputIntervalSeconds, 'g', -1, 64), v)
	}
	for _, c := range m.Consensus {
		row("consensus_running", strconv.FormatFloat(c.AtSeconds, 'g', -1, 64), float64(c.Running))
	}
	w.Flush()
	return buf.Bytes()
}

// RelaysCSV returns one row per relay.
func (m *Metrics) RelaysCSV() []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"name", "flags", "rate_bytes", "bytes_sent", "utilization", "circuits", "malicious", "crashed_seconds", "integrity_failures"})
	for _, r := range m.RelayStats {
		w.Write([]string{r.Name, r.Flags, strconv.FormatFloat(r.RateBytes, 'g', -1, 64), strconv.FormatUint(r.BytesSent, 10),
			strconv.FormatFloat(r.Utilization, 'g', -1, 64), strconv.Itoa(r.Circuits), r.Malicious,
			strconv.FormatFloat(r.CrashedFor, 'g', -1, 64), strconv.Itoa(r.IntegrityFail)})
	}
	w.Flush()
	return buf.Bytes()
}

// WriteDir writes every output file into dir (created if needed).
func WriteDir(dir string, m *Metrics, rs *RunStats) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	mj, err := m.JSON()
	if err != nil {
		return err
	}
	rj, err := json.MarshalIndent(rs, "", " ")
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
	}{
		{MetricsJSON, mj},
		{SamplesCSV, m.SamplesCSV()},
		{RelaysCSV, m.RelaysCSV()},
		{RunJSON, append(rj, '\n')},
		{ReportHTML, HTML(m, rs)},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	return nil
}
