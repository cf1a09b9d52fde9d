// Package metrics holds a relay's Prometheus metrics (docs/operators.md,
// "What the metrics mean", explains each one).
//
// Every Metrics has its own registry, so several relays in one process (a
// testnet) do not collide, and no metric carries an address, a circuit ID
// or anything else that could identify a client or a destination: labels
// come from small fixed sets.
package metrics

import (
	"net/http"
	"regexp"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// liveHeap adds two of the Go runtime's metrics to the usual ones:
// go_gc_heap_live_bytes (the heap the last collection found live: what
// the relay's state really holds, without garbage) and
// go_gc_cycles_total_gc_cycles_total (to tell when a collection, such as
// the one SIGUSR1 runs, has finished).
var liveHeap = collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/(heap/live|cycles/total):`)}

// Refusal reasons (label values of RefusalsTotal).
const (
	RefuseInboundLinks    = "inbound_links"     // MaxInboundLinks reached
	RefuseLinksPerAddress = "links_per_address" // too many links from one address
	RefuseCircuitsPerLink = "circuits_per_link"
	RefusePendingCreates  = "pending_creates" // too many fragmented CREATEs on a link
	RefuseCreateRate      = "create_rate"     // an address sent CREATEs too fast
	RefuseDraining        = "draining"        // shutting down
	RefuseQueueFull       = "queue_full"      // a circuit's queue overflowed
	RefuseOOM             = "oom"             // closed by the memory-cap handler
	RefuseExitPolicy      = "exit_policy"
	RefuseResolve         = "resolve_failed"
	RefuseStreams         = "streams"
	RefuseExtend          = "extend" // extend target refused (private, self, previous hop)
)

// Metrics are a relay's counters and gauges.
type Metrics struct {
	reg *prometheus.Registry

	Circuits     prometheus.Gauge
	Streams      prometheus.Gauge
	Links        *prometheus.GaugeVec   // direction: inbound, outbound
	CellsRead    prometheus.Counter     // cells read from links
	CellsWritten prometheus.Counter     // cells written to links
	BytesRead    prometheus.Counter     // link bytes in (cells × cell size)
	BytesWritten prometheus.Counter     // link bytes out
	ExitBytes    *prometheus.CounterVec // direction: to_target, from_target
	Handshakes   *prometheus.CounterVec // kind: link, circuit, extend; result: ok, failed
	Refusals     *prometheus.CounterVec // reason
	// queuedBytes reports the bytes of cells and stream data waiting in
	// the relay (SetQueued). It is read when scraped: the relay's count
	// changes with every queued cell, and a gauge set that often cost a
	// busy relay about 2% of its CPU.
	queuedBytes  atomic.Pointer[func() int64]
	BucketWaits  prometheus.Counter     // times the bandwidth bucket made a writer wait
	BucketWaited prometheus.Counter     // seconds spent waiting on it
	InConsensus  prometheus.Gauge       // 1 if the latest consensus lists this relay
	Uploads      *prometheus.CounterVec // result: ok, failed
	OnionRotated prometheus.Counter
	DNSLookups   *prometheus.CounterVec // result: hit, miss, failed
}

// New returns a fresh set of metrics with Go runtime and process
// collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	ns := "veil_relay"
	m := &Metrics{
		reg:          reg,
		Circuits:     prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "circuits", Help: "Circuits through this relay."}),
		Streams:      prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "exit_streams", Help: "Open exit streams."}),
		Links:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "links", Help: "Open links by who opened them."}, []string{"direction"}),
		CellsRead:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "cells_read_total", Help: "Cells read from links."}),
		CellsWritten: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "cells_written_total", Help: "Cells written to links."}),
		BytesRead:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "link_read_bytes_total", Help: "Cell bytes read from links."}),
		BytesWritten: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "link_written_bytes_total", Help: "Cell bytes written to links."}),
		ExitBytes:    prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "exit_bytes_total", Help: "Stream bytes exchanged with exit targets."}, []string{"direction"}),
		Handshakes:   prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "handshakes_total", Help: "Handshakes by kind and result."}, []string{"kind", "result"}),
		Refusals:     prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "refusals_total", Help: "Links, circuits and streams refused or closed, by reason."}, []string{"reason"}),
		BucketWaits:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "bandwidth_waits_total", Help: "Times the bandwidth token bucket made a link writer wait."}),
		BucketWaited: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "bandwidth_wait_seconds_total", Help: "Seconds link writers waited for bandwidth tokens."}),
		InConsensus:  prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "in_consensus", Help: "1 if the latest consensus lists this relay, 0 if not, -1 if unknown."}),
		Uploads:      prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "descriptor_uploads_total", Help: "Descriptor uploads to authorities by result."}, []string{"result"}),
		OnionRotated: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "onion_key_rotations_total", Help: "Onion key rotations."}),
		DNSLookups:   prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dns_lookups_total", Help: "Exit DNS lookups by result."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.Circuits, m.Streams, m.Links, m.CellsRead, m.CellsWritten, m.BytesRead,
		m.BytesWritten, m.ExitBytes, m.Handshakes, m.Refusals, m.BucketWaits, m.BucketWaited,
		m.InConsensus, m.Uploads, m.OnionRotated, m.DNSLookups,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "queued_bytes", Help: "Bytes of cells and stream data queued in the relay."}, m.queued),
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(liveHeap)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	m.InConsensus.Set(-1)
	return m
}

// SetQueued sets the function the queued_bytes gauge reads when scraped.
func (m *Metrics) SetQueued(f func() int64) { m.queuedBytes.Store(&f) }

// queued reads the queued_bytes source, 0 before a relay sets it.
func (m *Metrics) queued() float64 {
	if f := m.queuedBytes.Load(); f != nil {
		return float64((*f)())
	}
	return 0
}

// Registry is the registry holding these metrics, for tests and for
// adding a component's own collectors (e.g. the directory cache).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4})
}

// Refuse counts one refusal.
func (m *Metrics) Refuse(reason string) { m.Refusals.WithLabelValues(reason).Inc() }

// Handshake counts one handshake of kind with ok or failed.
func (m *Metrics) Handshake(kind string, ok bool) {
	res := "failed"
	if ok {
		res = "ok"
	}
	m.Handshakes.WithLabelValues(kind, res).Inc()
}
