package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// clkTck is Linux's USER_HZ, the unit of /proc/PID/stat's CPU times; it
// is 100 on every Linux architecture Go supports.
const clkTck = 100

// procSample is what /proc says about one process at one moment.
type procSample struct {
	CPU    float64 // user+system CPU seconds since it started
	RSSKiB int64   // resident set size
	HWMKiB int64   // peak resident set size
}

// readProc reads CPU time and resident memory of pid from /proc.
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14 and stime 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, errors.New("bench: malformed /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, errors.New("bench: short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, errors.New("bench: malformed /proc stat times")
	}
	s.CPU = float64(ut+st) / clkTck
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			s.RSSKiB = n
		case "VmHWM":
			s.HWMKiB = n
		}
	}
	return s, nil
}

// machineBusy returns the busy CPU seconds of the whole machine so far
// (/proc/stat: every state but idle and iowait).
func machineBusy() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, errors.New("bench: malformed /proc/stat")
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return float64(busy) / clkTck, nil
}

// loadMeter tells how much CPU processes other than ours used.
type loadMeter struct {
	pids func() []int // our processes (self included)
	t0   time.Time
	busy float64
	ours float64
}

func (m *loadMeter) oursNow() float64 {
	var sum float64
	for _, pid := range m.pids() {
		if s, err := readProc(pid); err == nil {
			sum += s.CPU
		}
	}
	return sum
}

// mark starts a measurement period.
func (m *loadMeter) mark() {
	m.t0 = time.Now()
	m.busy, _ = machineBusy()
	m.ours = m.oursNow()
}

// others returns the cores other processes used on average since mark.
func (m *loadMeter) others() float64 {
	busy, _ := machineBusy()
	wall := time.Since(m.t0).Seconds()
	if wall <= 0 {
		return 0
	}
	return max(0, (busy-m.busy)-(m.oursNow()-m.ours)) / wall
}

// waitQuiet waits, up to limit, until other processes use at most
// maxCores over a 3-second window (as the Tor harness does); it returns
// the seconds waited and the load last seen.
func waitQuiet(ctx context.Context, m *loadMeter, limit time.Duration, maxCores float64) (float64, float64) {
	start := time.Now()
	for {
		m.mark()
		select {
		case <-ctx.Done():
			return time.Since(start).Seconds(), -1
		case <-time.After(3 * time.Second):
		}
		o := m.others()
		if o <= maxCores || time.Since(start) >= limit {
			return time.Since(start).Seconds(), o
		}
	}
}

// relayMetrics are the counters read from a relay's metrics endpoint.
type relayMetrics struct {
	LinkReadBytes  float64 `json:"link_read_bytes"`
	ExitFromTarget float64 `json:"exit_from_target_bytes"`
	Circuits       float64 `json:"circuits"`
	ExitStreams    float64 `json:"exit_streams"`
	// The Go runtime's heap spans and goroutine stacks in use: unlike
	// RSS, they grow when freed heap is reused.
	HeapInuse  float64 `json:"heap_inuse_bytes"`
	StackInuse float64 `json:"stack_inuse_bytes"`
	// The heap the last collection found live, and how many collections
	// have finished (memSnapshot has each relay collect first).
	HeapLive float64 `json:"heap_live_bytes"`
	GCCycles float64 `json:"gc_cycles"`
}

// scrapeMetrics reads a relay's Prometheus text endpoint at addr.
func scrapeMetrics(ctx context.Context, c *http.Client, addr string) (relayMetrics, error) {
	var m relayMetrics
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		return m, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return m, err
	}
	return parseMetrics(b), nil
}

// parseMetrics picks the counters it knows from Prometheus text; other
// lines are ignored.
func parseMetrics(b []byte) relayMetrics {
	var m relayMetrics
	for line := range strings.Lines(string(b)) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		switch name {
		case "veil_relay_link_read_bytes_total":
			m.LinkReadBytes = v
		case `veil_relay_exit_bytes_total{direction="from_target"}`:
			m.ExitFromTarget = v
		case "veil_relay_circuits":
			m.Circuits = v
		case "veil_relay_exit_streams":
			m.ExitStreams = v
		case "go_memstats_heap_inuse_bytes":
			m.HeapInuse = v
		case "go_memstats_stack_inuse_bytes":
			m.StackInuse = v
		case "go_gc_heap_live_bytes":
			m.HeapLive = v
		case "go_gc_cycles_total_gc_cycles_total":
			m.GCCycles = v
		}
	}
	return m
}
