package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/proxy"

	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/socks"
)

// VeilResult is what the veil half measured.
type VeilResult struct {
	VotingInterval string `json:"voting_interval"`
	Client         string `json:"client"`
	// FirstConsensusS and StartToFirstDownloadS count from the moment
	// the authorities and relay processes are started (keys exist).
	FirstConsensusS       float64              `json:"first_consensus_s"`
	StartToFirstDownloadS float64              `json:"start_to_first_download_s"`
	QuietWaitS            float64              `json:"quiet_wait_s"`
	OtherCores            map[string]float64   `json:"other_cores_by_phase"`
	CircuitBuildMS        Stat                 `json:"circuit_build_ms"`
	Downloads             map[string]*Download `json:"downloads"`
	Bulk1MBps             Stat                 `json:"bulk_1_stream_MBps"`
	BulkParallelMBps      float64              `json:"bulk_parallel_MBps"`
	ParallelStreams       int                  `json:"parallel_streams"`
	RelayBulk             []RelayBulk          `json:"relay_bulk"`
	CPUsPerGiB            float64              `json:"relay_cpu_s_per_GiB"`
	RelayMem              []RelayMem           `json:"relay_memory"`
	RSSMiB                Stat                 `json:"relay_rss_MiB"`
	IdleCircuits          MemDelta             `json:"idle_circuits"`
	// IdleCircuitsLater is the same circuits after Config.IdleWait
	// without a cell, against a baseline taken as long after the links'
	// last cells (nil if not measured).
	IdleCircuitsLater *MemDelta `json:"idle_circuits_later,omitempty"`
	IdleWaitSeconds   float64   `json:"idle_wait_s,omitempty"`
	OpenStreams       MemDelta  `json:"open_streams"`
	BytesVerified     int64     `json:"bytes_verified"`
}

// Download is one size's OnionPerf figures.
type Download struct {
	Bytes   int  `json:"bytes"`
	TTFBMS  Stat `json:"ttfb_ms"`
	TotalMS Stat `json:"total_ms"`
	MBps    Stat `json:"MBps"`
}

// RelayBulk is one relay's share of the single-stream bulk phase.
type RelayBulk struct {
	Name      string  `json:"name"`
	CPUs      float64 `json:"cpu_s"`
	ReadBytes float64 `json:"read_bytes"` // from links, and an exit's from its targets
	OnCircuit bool    `json:"on_circuit"`
}

// RelayMem is one relay process's memory at the end of the run.
type RelayMem struct {
	Name    string  `json:"name"`
	RSSMiB  float64 `json:"rss_MiB"`
	PeakMiB float64 `json:"peak_rss_MiB"`
}

// MemDelta is the relays' memory growth over Count circuits (or streams)
// counted at the relays themselves: resident memory, and the Go heap and
// stacks in use. RSS is what the operator pays, but it does not grow
// when the relay reuses heap an earlier phase freed; heap and stacks in
// use do (they include garbage not yet collected, little here: the data
// path allocates nothing).
type MemDelta struct {
	Opened       int     `json:"opened"`
	Count        float64 `json:"count_at_relays"`
	DeltaKiB     float64 `json:"rss_delta_KiB"`
	PerKiB       float64 `json:"KiB_each"`
	HeapDeltaKiB float64 `json:"heap_stack_delta_KiB"`
	HeapPerKiB   float64 `json:"heap_stack_KiB_each"`
	// Live heap (after a full collection in every relay) plus stacks.
	LiveDeltaKiB float64 `json:"live_heap_stack_delta_KiB"`
	LivePerKiB   float64 `json:"live_heap_stack_KiB_each"`
}

// newMemDelta divides the growth from a to b among the relays' counts.
func newMemDelta(opened int, a, b relaySnap, count func(relayMetrics) float64) MemDelta {
	d := MemDelta{Opened: opened}
	for i := range a.proc {
		d.DeltaKiB += float64(b.proc[i].RSSKiB - a.proc[i].RSSKiB)
		d.HeapDeltaKiB += (b.met[i].HeapInuse + b.met[i].StackInuse - a.met[i].HeapInuse - a.met[i].StackInuse) / 1024
		d.LiveDeltaKiB += (b.met[i].HeapLive + b.met[i].StackInuse - a.met[i].HeapLive - a.met[i].StackInuse) / 1024
		d.Count += count(b.met[i]) - count(a.met[i])
	}
	if d.Count > 0 {
		d.PerKiB, d.HeapPerKiB, d.LivePerKiB = d.DeltaKiB/d.Count, d.HeapDeltaKiB/d.Count, d.LiveDeltaKiB/d.Count
	}
	return d
}

type measurer struct {
	cfg   *Config
	net   *network
	run   func(func(context.Context) error)
	web   *webServer
	socks string
	load  loadMeter
	v     *VeilResult
	hc    *http.Client
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func (m *measurer) progress(format string, args ...any) {
	m.cfg.Progress(fmt.Sprintf(format, args...))
}

func (m *measurer) phaseDone(name string) {
	m.v.OtherCores[name] = m.load.others()
	m.progress("%s done (other processes used %.2f cores)", name, m.v.OtherCores[name])
	m.load.mark()
}

func (m *measurer) measure(ctx context.Context) (*VeilResult, error) {
	cfg := m.cfg
	m.v = &VeilResult{VotingInterval: cfg.Interval.String(), OtherCores: map[string]float64{},
		Downloads: map[string]*Download{}, ParallelStreams: cfg.Parallel,
		Client: "in the bench process (client library, its SOCKS port, and the web server share it); CPU figures count relay processes only"}
	m.hc = &http.Client{Timeout: 10 * time.Second}
	files := map[string]int{"bulk": cfg.BulkSize}
	for _, s := range cfg.Sizes {
		files[sizeName(s)] = s
	}
	web, err := startWeb(files)
	if err != nil {
		return nil, err
	}
	defer web.close()
	m.web = web
	m.load.pids = func() []int { return append(m.net.pids(), os.Getpid()) }

	// Start: authorities and relay processes, then the client once a
	// consensus exists (as the Tor harness starts its client), then the
	// first download.
	t0 := time.Now()
	if err := m.net.start(ctx, cfg, m.run); err != nil {
		return nil, err
	}
	if err := m.net.waitConsensus(ctx); err != nil {
		return nil, err
	}
	m.v.FirstConsensusS = time.Since(t0).Seconds()
	cl, err := m.newClient(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	srv, err := socks.Listen(socks.Config{Addr: "127.0.0.1:0", Dialer: socks.ClientDialer(cl), Logger: cfg.Logger.With("node", "socks")})
	if err != nil {
		return nil, err
	}
	m.run(srv.Serve)
	m.socks = srv.Addr().String()
	first := sizeName(cfg.Sizes[0])
	for {
		_, err := m.get(ctx, "", first)
		if err == nil {
			break
		}
		if time.Since(t0) > time.Minute {
			return nil, fmt.Errorf("bench: no download within a minute: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.v.StartToFirstDownloadS = time.Since(t0).Seconds()
	m.progress("first consensus after %.3f s, first download through veil after %.3f s", m.v.FirstConsensusS, m.v.StartToFirstDownloadS)

	if cfg.QuietWait > 0 {
		m.progress("waiting up to %v for other processes to use at most %.2f cores", cfg.QuietWait, cfg.QuietCores)
		var other float64
		m.v.QuietWaitS, other = waitQuiet(ctx, &m.load, cfg.QuietWait, cfg.QuietCores)
		m.v.OtherCores["before"] = other
	}
	m.load.mark()
	for _, phase := range []struct {
		name string
		f    func(context.Context) error
	}{
		{"circuits", m.circuits}, {"sizes", m.sizes}, {"bulk", m.bulk}, {"parallel", m.parallel},
		{"idle_circuits", m.idleCircuits}, {"open_streams", m.openStreams},
	} {
		if err := phase.f(ctx); err != nil {
			return nil, fmt.Errorf("bench: %s: %w", phase.name, err)
		}
		m.phaseDone(phase.name)
	}
	time.Sleep(time.Second)
	var rss []float64
	for _, r := range m.net.relays {
		s, err := readProc(r.cmd.Process.Pid)
		if err != nil {
			return nil, err
		}
		m.v.RelayMem = append(m.v.RelayMem, RelayMem{Name: r.Name, RSSMiB: float64(s.RSSKiB) / 1024, PeakMiB: float64(s.HWMKiB) / 1024})
		rss = append(rss, float64(s.RSSKiB)/1024)
	}
	m.v.RSSMiB = stat(rss)
	return m.v, nil
}

// newClient bootstraps a client; preemptive < 0 builds no spare circuits.
func (m *measurer) newClient(ctx context.Context, preemptive int) (*client.Client, error) {
	cl, err := client.New(client.Config{Network: m.net.file, PreemptiveCircuits: preemptive, StatusInterval: -1,
		Logger: m.cfg.Logger.With("node", "client")})
	if err != nil {
		return nil, err
	}
	if err := cl.Bootstrap(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

// get downloads a file through the SOCKS port and counts its bytes.
func (m *measurer) get(ctx context.Context, user, name string) (fetchResult, error) {
	r, err := fetch(ctx, m.socks, user, m.web.addr, name, m.web.files[name])
	m.v.BytesVerified += r.Bytes
	return r, err
}

// circuits times fresh circuit builds: a client without spare circuits
// builds one for every new isolation key.
func (m *measurer) circuits(ctx context.Context) error {
	cl, err := m.newClient(ctx, -1)
	if err != nil {
		return err
	}
	defer cl.Close()
	for i := range m.cfg.Circuits + 1 { // the first takes the bootstrap circuit
		c, err := cl.DialIsolated(ctx, fmt.Sprint("circuit", i), "tcp", m.web.addr)
		if err != nil {
			return err
		}
		c.Close()
	}
	builds := cl.BuildTimes()
	builds = builds[max(0, len(builds)-m.cfg.Circuits):]
	var xs []float64
	for _, d := range builds {
		xs = append(xs, ms(d))
	}
	m.v.CircuitBuildMS = stat(xs)
	m.progress("circuit build: median %.2f ms, p90 %.2f ms (%d builds)", m.v.CircuitBuildMS.Median, m.v.CircuitBuildMS.P90, len(xs))
	return nil
}

// sizes downloads each size cfg.Fetches times (after one warm-up), each
// on a new stream.
func (m *measurer) sizes(ctx context.Context) error {
	for _, size := range m.cfg.Sizes {
		name := sizeName(size)
		if _, err := m.get(ctx, "", name); err != nil {
			return err
		}
		var ttfb, total, mbps []float64
		for range m.cfg.Fetches {
			r, err := m.get(ctx, "", name)
			if err != nil {
				return err
			}
			ttfb, total = append(ttfb, ms(r.TTFB)), append(total, ms(r.Total))
			mbps = append(mbps, float64(r.Bytes)/r.Total.Seconds()/1e6)
		}
		d := &Download{Bytes: size, TTFBMS: stat(ttfb), TotalMS: stat(total), MBps: stat(mbps)}
		m.v.Downloads[name] = d
		m.progress("%s: first byte %.2f / %.2f ms, total %.2f / %.2f ms (median / p90)", name, d.TTFBMS.Median, d.TTFBMS.P90, d.TotalMS.Median, d.TotalMS.P90)
	}
	return nil
}

// relaySnap is every relay's /proc and metrics reading at one moment.
type relaySnap struct {
	proc []procSample
	met  []relayMetrics
}

// memSnapshot is snapshot after a full garbage collection in every relay
// (SIGUSR1, cmd/veil), so that the live heap it reads holds no garbage.
func (m *measurer) memSnapshot(ctx context.Context) (relaySnap, error) {
	s, err := m.snapshot(ctx)
	if err != nil {
		return s, err
	}
	for i, r := range m.net.relays {
		if err := r.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			return s, fmt.Errorf("%s: %w", r.Name, err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; {
			mt, err := scrapeMetrics(ctx, m.hc, r.Metrics)
			if err != nil {
				return s, fmt.Errorf("%s metrics: %w", r.Name, err)
			}
			if mt.GCCycles >= s.met[i].GCCycles+2 { // both of logMemory's collections
				break
			}
			if time.Now().After(deadline) {
				return s, fmt.Errorf("%s: no garbage collection 10 s after SIGUSR1", r.Name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return m.snapshot(ctx)
}

func (m *measurer) snapshot(ctx context.Context) (relaySnap, error) {
	var s relaySnap
	for _, r := range m.net.relays {
		p, err := readProc(r.cmd.Process.Pid)
		if err != nil {
			return s, fmt.Errorf("%s: %w", r.Name, err)
		}
		mt, err := scrapeMetrics(ctx, m.hc, r.Metrics)
		if err != nil {
			return s, fmt.Errorf("%s metrics: %w", r.Name, err)
		}
		s.proc, s.met = append(s.proc, p), append(s.met, mt)
	}
	return s, nil
}

// bulk downloads the bulk file BulkReps times on one stream each, and
// charges each relay on the circuit its CPU time over the bytes
// downloaded (cpu_s_during_tor_bulk in the Tor harness's summarize.py).
func (m *measurer) bulk(ctx context.Context) error {
	before, err := m.snapshot(ctx)
	if err != nil {
		return err
	}
	var mbps []float64
	var bytes float64
	for range m.cfg.BulkReps {
		r, err := m.get(ctx, "", "bulk")
		if err != nil {
			return err
		}
		mbps = append(mbps, float64(r.Bytes)/r.Total.Seconds()/1e6)
		bytes += float64(r.Bytes)
	}
	after, err := m.snapshot(ctx)
	if err != nil {
		return err
	}
	m.v.Bulk1MBps = stat(mbps)
	var sum float64
	var on int
	for i, r := range m.net.relays {
		rb := RelayBulk{Name: r.Name, CPUs: after.proc[i].CPU - before.proc[i].CPU,
			ReadBytes: after.met[i].LinkReadBytes + after.met[i].ExitFromTarget - before.met[i].LinkReadBytes - before.met[i].ExitFromTarget}
		// Relays on the circuit read every byte (the exit from the web
		// server, the others in cells from a link); the others only see
		// directory and test traffic.
		rb.OnCircuit = rb.ReadBytes >= bytes/2
		if rb.OnCircuit {
			sum += rb.CPUs
			on++
		}
		m.v.RelayBulk = append(m.v.RelayBulk, rb)
	}
	if on > 0 {
		m.v.CPUsPerGiB = sum / float64(on) / (bytes / (1 << 30))
	}
	m.progress("one bulk stream: median %.1f MB/s; relay CPU %.2f s per relayed GiB (%d relays on the circuit)", m.v.Bulk1MBps.Median, m.v.CPUsPerGiB, on)
	return nil
}

// parallel downloads the bulk file on Parallel streams at once, each on
// its own circuit (its own SOCKS username), built before the clock starts.
func (m *measurer) parallel(ctx context.Context) error {
	warm := sizeName(m.cfg.Sizes[0])
	for i := range m.cfg.Parallel {
		if _, err := m.get(ctx, fmt.Sprint("parallel", i), warm); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, m.cfg.Parallel)
	got := make([]int64, m.cfg.Parallel)
	start := time.Now()
	for i := range m.cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := fetch(ctx, m.socks, fmt.Sprint("parallel", i), m.web.addr, "bulk", m.web.files["bulk"])
			errs[i], got[i] = err, r.Bytes
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	var total int64
	for i, err := range errs {
		if err != nil {
			return err
		}
		total += got[i]
	}
	m.v.BytesVerified += total
	m.v.BulkParallelMBps = float64(total) / wall.Seconds() / 1e6
	m.progress("%d bulk streams at once: %.1f MB/s in total", m.cfg.Parallel, m.v.BulkParallelMBps)
	return nil
}

// idleCircuits opens IdleCircuits circuits (one stream each, closed at
// once) from clients of at most 200 circuits each (client.MaxCircuits is
// 256) and charges the relays' RSS growth to the circuits they count. The
// clients bootstrap (and open their links) before the first reading.
func (m *measurer) idleCircuits(ctx context.Context) error {
	const perClient = 200
	var clients []*client.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	// Bootstrap the clients (their links) before the first reading.
	for range (m.cfg.IdleCircuits + perClient - 1) / perClient {
		cl, err := m.newClient(ctx, -1)
		if err != nil {
			return err
		}
		clients = append(clients, cl)
	}
	time.Sleep(time.Second)
	before, err := m.memSnapshot(ctx)
	if err != nil {
		return err
	}
	var beforeIdle relaySnap
	if m.cfg.IdleWait > 0 {
		// The baseline of the second reading: links idle as long as the
		// circuits will have been (their read buffers given back).
		time.Sleep(m.cfg.IdleWait)
		if beforeIdle, err = m.memSnapshot(ctx); err != nil {
			return err
		}
	}
	for i, cl := range clients {
		if err := dialMany(ctx, min(m.cfg.IdleCircuits-i*perClient, perClient), func(j int) (net.Conn, error) {
			return cl.DialIsolated(ctx, fmt.Sprint("idle", j), "tcp", m.web.addr)
		}, true); err != nil {
			return err
		}
	}
	time.Sleep(time.Second)
	after, err := m.memSnapshot(ctx)
	if err != nil {
		return err
	}
	d := newMemDelta(m.cfg.IdleCircuits, before, after, func(x relayMetrics) float64 { return x.Circuits })
	m.v.IdleCircuits = d
	m.progress("idle circuits: %.0f circuit hops at the relays, live heap and stacks +%.0f KiB (%.2f KiB each), RSS +%.0f KiB (%.2f KiB each)",
		d.Count, d.LiveDeltaKiB, d.LivePerKiB, d.DeltaKiB, d.PerKiB)
	if m.cfg.IdleWait <= 0 {
		return nil
	}
	// By now each relay has dropped the expanded layer keys of circuits
	// that carried no cell for a whole key-release period.
	time.Sleep(m.cfg.IdleWait - time.Second)
	later, err := m.memSnapshot(ctx)
	if err != nil {
		return err
	}
	dl := newMemDelta(m.cfg.IdleCircuits, beforeIdle, later, func(x relayMetrics) float64 { return x.Circuits })
	m.v.IdleCircuitsLater, m.v.IdleWaitSeconds = &dl, m.cfg.IdleWait.Seconds()
	m.progress("the same circuits after %v idle: live heap and stacks +%.0f KiB (%.2f KiB each)", m.cfg.IdleWait, dl.LiveDeltaKiB, dl.LivePerKiB)
	return nil
}

// openStreams holds OpenStreams streams open through the SOCKS port (no
// request sent) and charges the relays' RSS growth to the exits' streams.
func (m *measurer) openStreams(ctx context.Context) error {
	before, err := m.memSnapshot(ctx)
	if err != nil {
		return err
	}
	d, err := proxy.SOCKS5("tcp", m.socks, &proxy.Auth{User: "streams", Password: "x"}, proxy.Direct)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	err = dialMany(ctx, m.cfg.OpenStreams, func(int) (net.Conn, error) {
		c, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", m.web.addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}, false)
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	after, err := m.memSnapshot(ctx)
	if err != nil {
		return err
	}
	sd := newMemDelta(m.cfg.OpenStreams, before, after, func(x relayMetrics) float64 { return x.ExitStreams })
	m.v.OpenStreams = sd
	m.progress("open streams: %.0f at the exits, live heap and stacks +%.0f KiB (%.2f KiB each), RSS +%.0f KiB (%.2f KiB each)",
		sd.Count, sd.LiveDeltaKiB, sd.LivePerKiB, sd.DeltaKiB, sd.PerKiB)
	return nil
}

// dialMany calls dial for 0..n-1, eight at a time; with closeNow each
// connection is closed as soon as it is open.
func dialMany(ctx context.Context, n int, dial func(int) (net.Conn, error), closeNow bool) error {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dial(i)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
			if closeNow {
				c.Close()
			}
		}()
	}
	wg.Wait()
	return first
}
