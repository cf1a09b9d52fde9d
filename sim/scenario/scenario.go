// Package scenario reads the simulator's scenario files: TOML documents
// that describe a network (regions and latencies, authorities, relays
// with a bandwidth distribution, servers), the clients and their traffic,
// adversaries, and events at given virtual times. docs/simulator.md is
// the reference; builtin/ holds the scenarios `veil sim` knows by name.
//
// Decoding is strict: an unknown key, a key of the wrong type or a value
// out of range is an error that names it.
package scenario

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Scenario is one simulation's description.
type Scenario struct {
	Name        string      `toml:"name"`
	Description string      `toml:"description"`
	Duration    Duration    `toml:"duration"` // virtual time simulated
	Seed        uint64      `toml:"seed"`     // default seed (veil sim --seed overrides)
	Network     Network     `toml:"network"`
	Directory   Directory   `toml:"directory"`
	Relays      Relays      `toml:"relays"`
	Servers     Servers     `toml:"servers"`
	Clients     []Clients   `toml:"clients"`
	Adversary   []Adversary `toml:"adversary"`
	Events      []Event     `toml:"events"`
}

// Network is the latency model.
type Network struct {
	Regions []string `toml:"regions"`
	// LatencyMS[i][j] is the one-way latency from region i to j in ms.
	LatencyMS [][]float64 `toml:"latency_ms"`
	Jitter    float64     `toml:"jitter"` // fraction of the latency added at random, 0..1
	Loss      float64     `toml:"loss"`   // share of cells that need a retransmission, 0..0.5
}

// Directory is the authorities.
type Directory struct {
	Authorities int    `toml:"authorities"`
	Region      string `toml:"region"`
}

// Relays is the honest relays.
type Relays struct {
	Count        int                `toml:"count"`
	ExitFraction float64            `toml:"exit_fraction"`
	Regions      map[string]float64 `toml:"regions"` // region -> weight; empty: uniform
	Bandwidth    Bandwidth          `toml:"bandwidth"`
	// HandshakeCPU is the relay's CPU time per circuit handshake it
	// answers (default DefaultHandshakeCPU), on CPUCores cores (default
	// 2); see docs/simulator.md, "Relay CPU".
	HandshakeCPU Duration `toml:"handshake_cpu"`
	CPUCores     int      `toml:"cpu_cores"`
}

// Bandwidth is a distribution of uplink bandwidths, in Mbit/s.
type Bandwidth struct {
	// Distribution is "fixed" (every relay MedianMbit), "lognormal"
	// (median MedianMbit, Sigma) or "pareto" (scale MedianMbit, Alpha),
	// clamped to [MinMbit, MaxMbit].
	Distribution string  `toml:"distribution"`
	MedianMbit   float64 `toml:"median_mbit"`
	Sigma        float64 `toml:"sigma"`
	Alpha        float64 `toml:"alpha"`
	MinMbit      float64 `toml:"min_mbit"`
	MaxMbit      float64 `toml:"max_mbit"`
}

// Servers is the destinations clients fetch from: each serves a file of
// whatever size a request asks for.
type Servers struct {
	Count   int                `toml:"count"`
	Regions map[string]float64 `toml:"regions"`
}

// Clients is a group of clients sharing a traffic model.
type Clients struct {
	Name          string             `toml:"name"`
	Count         int                `toml:"count"`
	Model         string             `toml:"model"` // "onionperf", "bulk" or "web"
	Regions       map[string]float64 `toml:"regions"`
	BandwidthMbit float64            `toml:"bandwidth_mbit"` // uplink
	Start         Duration           `toml:"start"`          // first fetch, plus a uniform offset in [0, Spread)
	Spread        Duration           `toml:"spread"`
	Port          int                `toml:"port"`
	// onionperf: fetch SizesKiB in turn, one every Interval.
	Interval Duration `toml:"interval"`
	SizesKiB []int    `toml:"sizes_kib"`
	// bulk: fetch SizeKiB again and again.
	SizeKiB int `toml:"size_kib"`
	// web: pages of log-normal size (median PageKiB, sigma 1) with an
	// exponential think time of mean Think between them.
	PageKiB int      `toml:"page_kib"`
	Think   Duration `toml:"think"`
	// Users is how many users one simulated web client stands for
	// (tornettools' 1/process_scale; default 1): it runs that many
	// independent page-and-think sessions over its circuits.
	Users int `toml:"users"`
}

// Adversary is a group of malicious relays added to the honest ones.
// They all belong to one adversary, which sees what any of them sees.
type Adversary struct {
	Count int `toml:"count"`
	// Behaviour towards the forward RELAY cells the relay passes on:
	// "tag" flips a bit, "drop" drops them, "delay" holds each for Delay,
	// "passive" relays honestly and only watches (e.g. the exit half of a
	// tagging attack).
	Behaviour     string  `toml:"behaviour"`
	BandwidthMbit float64 `toml:"bandwidth_mbit"`
	Exit          bool    `toml:"exit"`
	Region        string  `toml:"region"`
	// Skip is how many forward RELAY cells of each circuit pass untouched
	// before the behaviour starts.
	Skip int `toml:"skip"`
	// Cells is how many cells of each circuit the behaviour applies to
	// after Skip; 0 means every cell. Unset: 1 for tag and drop, every
	// cell for delay.
	Cells *int `toml:"cells"`
	// Fraction is the chance that an eligible cell is affected (default 1).
	Fraction float64 `toml:"fraction"`
	// Delay is how long "delay" holds a cell.
	Delay Duration `toml:"delay"`
}

// AffectedCells is Cells with its default filled in (0: every cell).
func (a *Adversary) AffectedCells() int {
	if a.Cells != nil {
		return *a.Cells
	}
	if a.Behaviour == "delay" {
		return 0
	}
	return 1
}

// Event is something that happens at a virtual time.
type Event struct {
	At Duration `toml:"at"`
	// Action: "crash" (Fraction or Count of the honest relays, chosen at
	// random, crash and come back after For, if set), "authority-offline"
	// (authority Authority, for For), "partition" (region Region is cut
	// off from the others, for For), "create-flood" (below).
	Action    string   `toml:"action"`
	Fraction  float64  `toml:"fraction"`
	Count     int      `toml:"count"`
	Authority int      `toml:"authority"`
	Region    string   `toml:"region"`
	For       Duration `toml:"for"`
	// "create-flood": Attackers nodes, each with its own address, open a
	// link to relay Target (a relay name such as "relay3"; default: the
	// honest relay with the most bandwidth) and send Rate complete
	// CREATEs per second each, for For (default: to the end).
	Target    string  `toml:"target"`
	Attackers int     `toml:"attackers"`
	Rate      float64 `toml:"rate"`
}

// Duration is a time.Duration written as a Go duration string ("90s").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

//go:embed builtin/*.toml
var builtin embed.FS

// Builtins lists the built-in scenarios' names, sorted.
func Builtins() []string {
	ents, _ := builtin.ReadDir("builtin")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".toml"))
	}
	sort.Strings(out)
	return out
}

// Load returns the built-in scenario called name, or else reads the file
// name.
func Load(name string) (*Scenario, error) {
	if slices.Contains(Builtins(), name) {
		b, err := builtin.ReadFile(path.Join("builtin", name+".toml"))
		if err != nil {
			return nil, err
		}
		return Parse(b)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("scenario: %q is neither a built-in (%s) nor a readable file: %w",
			name, strings.Join(Builtins(), ", "), err)
	}
	return Parse(b)
}

// Parse decodes and validates a scenario file. Unknown keys are refused.
func Parse(b []byte) (*Scenario, error) {
	var s Scenario
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&s)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("scenario: unknown keys: %s", strings.Join(keys, ", "))
	}
	s.defaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}
