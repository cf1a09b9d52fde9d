// Package report holds what a simulation measures and writes it out: the
// metrics as JSON and CSV, and a self-contained HTML report with SVG plots
// (CDFs, bars, time series) drawn by hand, with no dependencies.
//
// Metrics contain only values computed in virtual time, so two runs of one
// scenario with one seed give byte-identical metrics files. What depends
// on the machine (wall time, memory) is kept apart, in RunStats.
package report

import (
	"sort"
)

// Metrics is everything a run measured, in virtual time. Durations are in
// seconds, sizes in bytes, rates in bytes per second.
type Metrics struct {
	Scenario       string  `json:"scenario"`
	Seed           uint64  `json:"seed"`
	VirtualSeconds float64 `json:"virtual_seconds"`
	Relays         int     `json:"relays"`
	Clients        int     `json:"clients"`
	Authorities    int     `json:"authorities"`

	CircuitsLaunched int       `json:"circuits_launched"`
	CircuitsBuilt    int       `json:"circuits_built"`
	BuildSeconds     []float64 `json:"build_seconds"` // successful builds

	// Fetches by size label ("50KiB", "1MiB", "5MiB", "web", ...).
	Fetches map[string]*FetchStats `json:"fetches"`

	// Errors counts failures by cause ("build: timeout", ...).
	Errors map[string]int `json:"errors"`

	// Goodput is the stream bytes clients received in each
	// GoodputIntervalSeconds of virtual time.
	GoodputIntervalSeconds float64   `json:"goodput_interval_seconds"`
	Goodput                []float64 `json:"goodput_bytes"`

	RelayStats []RelayStats `json:"relay_stats"`

	// Consensus rounds: when each was published and how many relays it
	// listed as Running.
	Consensus []ConsensusRound `json:"consensus"`

	Adversary AdversaryStats `json:"adversary"`

	// Events lists what the scenario did, in order.
	Events []EventRecord `json:"events"`

	// CellEvents is the number of cell deliveries simulated.
	CellEvents uint64 `json:"cell_events"`
}

// FetchStats is one kind of fetch.
type FetchStats struct {
	Started   int       `json:"started"`
	Completed int       `json:"completed"`
	Failed    int       `json:"failed"`
	TTFB      []float64 `json:"ttfb_seconds"`     // request to first byte
	Seconds   []float64 `json:"transfer_seconds"` // request to last byte
}

// RelayStats is one relay's load.
type RelayStats struct {
	Name          string  `json:"name"`
	Flags         string  `json:"flags"`
	RateBytes     float64 `json:"rate_bytes"` // uplink capacity
	BytesSent     uint64  `json:"bytes_sent"`
	Utilization   float64 `json:"utilization"` // share of the run the uplink was busy
	Circuits      int     `json:"circuits"`    // circuits it accepted
	Malicious     string  `json:"malicious,omitempty"`
	CrashedFor    float64 `json:"crashed_seconds,omitempty"`
	IntegrityFail int     `json:"integrity_failures"` // relay cells that failed its layer check
}

// ConsensusRound is one published consensus.
type ConsensusRound struct {
	AtSeconds  float64 `json:"at_seconds"`
	Running    int     `json:"running"`
	Signatures int     `json:"signatures"`
}

// AdversaryStats follows the malicious relays' circuits.
type AdversaryStats struct {
	// Tampered is the number of circuits on which a malicious relay
	// modified or dropped a cell.
	Tampered int `json:"tampered_circuits"`
	// DetectedNextHop is how many of those the next hop (or, for
	// backward cells, the client) detected and destroyed at the first
	// tampered cell.
	DetectedNextHop int `json:"detected_next_hop"`
	// DeliveredAfter counts relay cells the next hop accepted on a
	// circuit after it was tampered with (must stay 0).
	DeliveredAfter int `json:"delivered_after_tamper"`
	// CircuitsThrough is the number of circuits that went through a
	// malicious relay.
	CircuitsThrough int `json:"circuits_through"`
	// The rest is kept by sim/world/adversary.go and flood.go.
	//
	// CellsTampered counts cells tagged or dropped; CellsDelayed cells
	// held by a "delay" relay, on CircuitsDelayed circuits, of which
	// DelayDetected had a later cell refused by the next hop (a held cell
	// overtaken by a later one is a reordering).
	CellsTampered   int `json:"cells_tampered"`
	CellsDelayed    int `json:"cells_delayed"`
	CircuitsDelayed int `json:"circuits_delayed"`
	DelayDetected   int `json:"delay_detected"`
	// ReachedColluder counts tampered circuits that already ran through
	// another of the adversary's relays further on; ColluderAccepted
	// counts cells of a tampered circuit that such a relay accepted after
	// the tampering (must stay 0).
	ReachedColluder  int `json:"tampered_reaching_colluder"`
	ColluderAccepted int `json:"colluder_accepted_after_tamper"`
	// NeverArrived counts tampered circuits whose tampered cell never
	// reached the next hop (the circuit or a link died first), so there was
	// nothing to detect: Tampered = DetectedNextHop + NeverArrived.
	NeverArrived int `json:"tampered_never_arrived"`
	// Floods are the create-flood events.
	Floods []FloodStats `json:"floods,omitempty"`
}

// FloodStats is one CREATE flood and what it did to honest circuits
// through its target.
type FloodStats struct {
	Target    string  `json:"target"`
	Attackers int     `json:"attackers"`
	Rate      float64 `json:"rate_per_attacker"`
	// Sent is the CREATEs the attackers sent, Answered those the target
	// did a handshake for, Refused those it refused (CREATE rate limit per
	// address, or a full handshake backlog on the link).
	Sent     int `json:"creates_sent"`
	Answered int `json:"creates_answered"`
	Refused  int `json:"creates_refused"`
	// Build times of honest circuits through the target, finished before
	// and during the flood; HandshakeWait is the target's queueing plus
	// CPU time for each honest CREATE during the flood.
	BuildBefore   []float64 `json:"build_seconds_before"`
	BuildDuring   []float64 `json:"build_seconds_during"`
	HandshakeWait []float64 `json:"honest_handshake_seconds"`
}

// EventRecord is one scenario event as it happened.
type EventRecord struct {
	AtSeconds float64 `json:"at_seconds"`
	What      string  `json:"what"`
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	return &Metrics{Fetches: map[string]*FetchStats{}, Errors: map[string]int{}, GoodputIntervalSeconds: 10}
}

// Fetch returns the stats of fetch kind label, creating them.
func (m *Metrics) Fetch(label string) *FetchStats {
	f := m.Fetches[label]
	if f == nil {
		f = &FetchStats{}
		m.Fetches[label] = f
	}
	return f
}

// Error counts one failure of cause.
func (m *Metrics) Error(cause string) { m.Errors[cause]++ }

// AddGoodput counts n bytes received at virtual second t.
func (m *Metrics) AddGoodput(t float64, n int) {
	i := int(t / m.GoodputIntervalSeconds)
	for len(m.Goodput) <= i {
		m.Goodput = append(m.Goodput, 0)
	}
	m.Goodput[i] += float64(n)
}

// FetchLabels returns the fetch kinds, sizes first in increasing order of
// their labels' byte counts, then the others by name.
func (m *Metrics) FetchLabels() []string {
	var out []string
	for k := range m.Fetches {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := labelBytes(out[i]), labelBytes(out[j])
		if a != b {
			return a < b
		}
		return out[i] < out[j]
	})
	return out
}

// ErrorCauses returns the error causes, sorted.
func (m *Metrics) ErrorCauses() []string {
	var out []string
	for k := range m.Errors {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// SizeLabel names a size: "50KiB", "1MiB", or the byte count.
func SizeLabel(n int) string {
	switch {
	case n%(1<<20) == 0:
		return itoa(n>>20) + "MiB"
	case n%(1<<10) == 0:
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

func labelBytes(s string) int {
	n, i := 0, 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		n = n*10 + int(s[i]-'0')
		i++
	}
	if i == 0 {
		return 1 << 62 // not a size: after the sizes
	}
	switch s[i:] {
	case "KiB":
		n <<= 10
	case "MiB":
		n <<= 20
	}
	return n
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// RunStats is what depends on the machine: kept out of Metrics so metrics
// stay reproducible (it is written to run.json, which no determinism
// check compares).
type RunStats struct {
	WallSeconds    float64 `json:"wall_seconds"`  // setup included
	SetupSeconds   float64 `json:"setup_seconds"` // keys, descriptors, first consensus
	CPUSeconds     float64 `json:"cpu_seconds"`   // user + system, all threads
	CPUSource      string  `json:"cpu_source"`    // "getrusage", or "Go runtime estimate" where there is none
	VirtualPerWall float64 `json:"virtual_seconds_per_wall_second"`
	// PeakMemoryMiB is the peak resident set; PeakMemorySource says how
	// it was read: "VmHWM" (Linux /proc/self/status) or "Go runtime
	// total" (runtime/metrics, elsewhere).
	PeakMemoryMiB    float64 `json:"peak_memory_mib"`
	PeakMemorySource string  `json:"peak_memory_source"`
	// PeakHeapMiB is the largest heap seen at a progress sample
	// (runtime/metrics /memory/classes/heap/objects:bytes).
	PeakHeapMiB   float64 `json:"peak_heap_mib"`
	Events        uint64  `json:"events"`
	EventsPerWall float64 `json:"events_per_wall_second"`
	Load          float64 `json:"load"` // veil sim --load
	Machine       string  `json:"machine"`
	GoVersion     string  `json:"go_version"`
	// Progress samples: virtual seconds reached at wall seconds (kept for
	// old readers; Samples has the same and more).
	Progress [][2]float64     `json:"progress"`
	Samples  []ProgressSample `json:"samples"`
}

// ProgressSample is the simulator's state at one moment of the run.
type ProgressSample struct {
	WallSeconds    float64 `json:"wall_seconds"`
	VirtualSeconds float64 `json:"virtual_seconds"`
	VirtualPerWall float64 `json:"virtual_per_wall"` // average since the start
	HeapMiB        float64 `json:"heap_mib"`
	RSSMiB         float64 `json:"peak_rss_mib"`
}
