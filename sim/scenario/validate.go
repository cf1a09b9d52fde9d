package scenario

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// Limits on scenario sizes: far above tor-10pct, low enough that a typo
// does not exhaust memory.
const (
	MaxRelays      = 20000
	MaxClients     = 200000
	MaxAuthorities = 9
	MaxDuration    = 7 * 24 * time.Hour
)

func (s *Scenario) defaults() {
	if len(s.Network.Regions) == 0 {
		s.Network.Regions = []string{"default"}
		if len(s.Network.LatencyMS) == 0 {
			s.Network.LatencyMS = [][]float64{{20}}
		}
	}
	if s.Directory.Authorities == 0 {
		s.Directory.Authorities = 3
	}
	if s.Directory.Region == "" {
		s.Directory.Region = s.Network.Regions[0]
	}
	if s.Servers.Count == 0 {
		s.Servers.Count = 1
	}
	b := &s.Relays.Bandwidth
	if b.Distribution == "" {
		b.Distribution = "fixed"
	}
	if b.MedianMbit == 0 {
		b.MedianMbit = 10
	}
	if b.MinMbit == 0 {
		b.MinMbit = 1
	}
	if b.MaxMbit == 0 {
		b.MaxMbit = 10000
	}
	for i := range s.Clients {
		c := &s.Clients[i]
		if c.Name == "" {
			c.Name = fmt.Sprintf("%s%d", c.Model, i)
		}
		if c.BandwidthMbit == 0 {
			c.BandwidthMbit = 100
		}
		if c.Port == 0 {
			c.Port = 443
		}
		if c.Model == "onionperf" && len(c.SizesKiB) == 0 {
			c.SizesKiB = []int{50, 1024, 5120}
		}
	}
	for i := range s.Adversary {
		if s.Adversary[i].BandwidthMbit == 0 {
			s.Adversary[i].BandwidthMbit = b.MedianMbit
		}
	}
}

// Validate checks ranges and cross-references; the error names the field.
func (s *Scenario) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("scenario %q: "+f, append([]any{s.Name}, a...)...) }
	n := &s.Network
	switch {
	case s.Name == "":
		return bad("name is required")
	case s.Duration.Duration <= 0 || s.Duration.Duration > MaxDuration:
		return bad("duration must be in (0, %v]", MaxDuration)
	case len(n.LatencyMS) != len(n.Regions):
		return bad("network.latency_ms must have one row per region (%d)", len(n.Regions))
	case n.Jitter < 0 || n.Jitter > 1:
		return bad("network.jitter must be in [0, 1]")
	case n.Loss < 0 || n.Loss > 0.5:
		return bad("network.loss must be in [0, 0.5]")
	case s.Directory.Authorities < 1 || s.Directory.Authorities > MaxAuthorities:
		return bad("directory.authorities must be 1..%d", MaxAuthorities)
	case s.Relays.Count < 3 || s.Relays.Count > MaxRelays:
		return bad("relays.count must be 3..%d", MaxRelays)
	case s.Relays.ExitFraction <= 0 || s.Relays.ExitFraction > 1:
		return bad("relays.exit_fraction must be in (0, 1]")
	case s.Servers.Count < 1 || s.Servers.Count > 10000:
		return bad("servers.count must be 1..10000")
	}
	seen := map[string]bool{}
	for i, r := range n.Regions {
		if r == "" || seen[r] {
			return bad("network.regions: empty or repeated name %q", r)
		}
		seen[r] = true
		if len(n.LatencyMS[i]) != len(n.Regions) {
			return bad("network.latency_ms row %d must have %d entries", i, len(n.Regions))
		}
		for _, v := range n.LatencyMS[i] {
			if v <= 0 || v > 5000 || math.IsNaN(v) {
				return bad("network.latency_ms values must be in (0, 5000]")
			}
		}
	}
	if err := s.checkRegion("directory.region", s.Directory.Region); err != nil {
		return err
	}
	for _, w := range []struct {
		field string
		m     map[string]float64
	}{{"relays.regions", s.Relays.Regions}, {"servers.regions", s.Servers.Regions}} {
		if err := s.checkWeights(w.field, w.m); err != nil {
			return err
		}
	}
	if err := s.Relays.Bandwidth.validate(); err != nil {
		return bad("relays.bandwidth: %v", err)
	}
	total := 0
	for i, c := range s.Clients {
		f := fmt.Sprintf("clients[%d] (%s)", i, c.Name)
		total += c.Count
		switch {
		case c.Count < 0:
			return bad("%s.count must not be negative", f)
		case c.BandwidthMbit <= 0:
			return bad("%s.bandwidth_mbit must be positive", f)
		case c.Port < 1 || c.Port > 65535:
			return bad("%s.port must be 1..65535", f)
		case c.Start.Duration < 0 || c.Spread.Duration < 0:
			return bad("%s.start and spread must not be negative", f)
		}
		switch c.Model {
		case "onionperf":
			if c.Interval.Duration <= 0 {
				return bad("%s.interval must be positive", f)
			}
			for _, k := range c.SizesKiB {
				if k <= 0 || k > 1<<20 {
					return bad("%s.sizes_kib must be in 1..%d", f, 1<<20)
				}
			}
		case "bulk":
			if c.SizeKiB <= 0 || c.SizeKiB > 1<<20 {
				return bad("%s.size_kib must be in 1..%d", f, 1<<20)
			}
		case "web":
			if c.PageKiB <= 0 || c.PageKiB > 1<<16 || c.Think.Duration <= 0 {
				return bad("%s: page_kib must be 1..%d and think positive", f, 1<<16)
			}
		default:
			return bad("%s.model must be onionperf, bulk or web, not %q", f, c.Model)
		}
		if err := s.checkWeights(f+".regions", c.Regions); err != nil {
			return err
		}
	}
	if total > MaxClients {
		return bad("at most %d clients", MaxClients)
	}
	for i, a := range s.Adversary {
		f := fmt.Sprintf("adversary[%d]", i)
		switch {
		case a.Count < 1 || a.Count > MaxRelays:
			return bad("%s.count must be 1..%d", f, MaxRelays)
		case a.Behaviour != "tag" && a.Behaviour != "drop":
			return bad("%s.behaviour must be tag or drop, not %q", f, a.Behaviour)
		case a.BandwidthMbit <= 0:
			return bad("%s.bandwidth_mbit must be positive", f)
		}
		if a.Region != "" {
			if err := s.checkRegion(f+".region", a.Region); err != nil {
				return err
			}
		}
	}
	for i, e := range s.Events {
		f := fmt.Sprintf("events[%d]", i)
		if e.At.Duration < 0 || e.For.Duration < 0 {
			return bad("%s: at and for must not be negative", f)
		}
		switch e.Action {
		case "crash":
			if (e.Fraction <= 0 || e.Fraction > 1) == (e.Count <= 0) {
				return bad("%s: crash needs fraction in (0, 1] or a positive count", f)
			}
		case "authority-offline":
			if e.Authority < 0 || e.Authority >= s.Directory.Authorities {
				return bad("%s.authority must be 0..%d", f, s.Directory.Authorities-1)
			}
		case "partition":
			if err := s.checkRegion(f+".region", e.Region); err != nil {
				return err
			}
		default:
			return bad("%s.action must be crash, authority-offline or partition, not %q", f, e.Action)
		}
	}
	return nil
}

func (s *Scenario) checkRegion(field, r string) error {
	if !slices.Contains(s.Network.Regions, r) {
		return fmt.Errorf("scenario %q: %s: unknown region %q", s.Name, field, r)
	}
	return nil
}

func (s *Scenario) checkWeights(field string, m map[string]float64) error {
	for _, k := range SortedKeys(m) {
		if err := s.checkRegion(field, k); err != nil {
			return err
		}
		if m[k] < 0 || math.IsNaN(m[k]) || math.IsInf(m[k], 0) {
			return fmt.Errorf("scenario %q: %s: weight of %q must be a non-negative number", s.Name, field, k)
		}
	}
	return nil
}

func (b *Bandwidth) validate() error {
	switch {
	case b.MinMbit <= 0 || b.MaxMbit < b.MinMbit:
		return fmt.Errorf("need 0 < min_mbit <= max_mbit")
	case b.MedianMbit <= 0:
		return fmt.Errorf("median_mbit must be positive")
	}
	switch b.Distribution {
	case "fixed":
	case "lognormal":
		if b.Sigma <= 0 || b.Sigma > 5 {
			return fmt.Errorf("lognormal needs sigma in (0, 5]")
		}
	case "pareto":
		if b.Alpha <= 0 || b.Alpha > 10 {
			return fmt.Errorf("pareto needs alpha in (0, 10]")
		}
	default:
		return fmt.Errorf("distribution must be fixed, lognormal or pareto, not %q", b.Distribution)
	}
	return nil
}

// SortedKeys returns m's keys in order: iterate weights through it so
// that draws do not depend on map order.
func SortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// RegionIndex returns the index of region r (which Validate checked).
func (s *Scenario) RegionIndex(r string) int { return slices.Index(s.Network.Regions, r) }
