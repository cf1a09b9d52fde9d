package scenario

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Limits on scenario sizes: far above tor-10pct, low enough that a typo
// does not exhaust memory.
const (
	MaxRelays      = 20000
	MaxClients     = 200000
	MaxAuthorities = 9
	// MaxUsersPerClient bounds a web client's sessions.
	MaxUsersPerClient = 10000
	MaxDuration       = 7 * 24 * time.Hour
	// MaxAttackers bounds a create-flood's attacking nodes and
	// MaxFloodRate each one's CREATEs per second.
	MaxAttackers = 10000
	MaxFloodRate = 100000
	// MaxCellDelay bounds what a "delay" adversary holds a cell.
	MaxCellDelay = time.Minute
)

// DefaultHandshakeCPU is a relay's CPU time per hybrid circuit handshake:
// the relay side measured on the 2-core Xeon of docs/benchmarks.md
// ("Circuit handshakes and cell crypto", 176 µs).
const DefaultHandshakeCPU = 176 * time.Microsecond

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
		if c.Users == 0 {
			c.Users = 1
		}
		if c.Model == "onionperf" && len(c.SizesKiB) == 0 {
			c.SizesKiB = []int{50, 1024, 5120}
		}
	}
	if s.Relays.HandshakeCPU.Duration == 0 {
		s.Relays.HandshakeCPU.Duration = DefaultHandshakeCPU
	}
	if s.Relays.CPUCores == 0 {
		s.Relays.CPUCores = 2
	}
	for i := range s.Adversary {
		a := &s.Adversary[i]
		if a.BandwidthMbit == 0 {
			a.BandwidthMbit = b.MedianMbit
		}
		if a.Fraction == 0 {
			a.Fraction = 1
		}
	}
	for i := range s.Events {
		if e := &s.Events[i]; e.Action == "create-flood" && e.Attackers == 0 {
			e.Attackers = 1
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
	case s.Relays.HandshakeCPU.Duration < 0 || s.Relays.HandshakeCPU.Duration > time.Second:
		return bad("relays.handshake_cpu must be in [0, 1s]")
	case s.Relays.CPUCores < 1 || s.Relays.CPUCores > 256:
		return bad("relays.cpu_cores must be 1..256")
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
			if c.Users < 1 || c.Users > MaxUsersPerClient {
				return bad("%s.users must be 1..%d", f, MaxUsersPerClient)
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
	if err := s.validateAdversary(); err != nil {
		return err
	}
	if err := s.validateEvents(); err != nil {
		return err
	}
	return nil
}

func (s *Scenario) validateAdversary() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("scenario %q: "+f, append([]any{s.Name}, a...)...) }
	for i, a := range s.Adversary {
		f := fmt.Sprintf("adversary[%d]", i)
		switch {
		case a.Count < 1 || a.Count > MaxRelays:
			return bad("%s.count must be 1..%d", f, MaxRelays)
		case !slices.Contains([]string{"tag", "drop", "delay", "passive"}, a.Behaviour):
			return bad("%s.behaviour must be tag, drop, delay or passive, not %q", f, a.Behaviour)
		case a.BandwidthMbit <= 0:
			return bad("%s.bandwidth_mbit must be positive", f)
		case a.Skip < 0:
			return bad("%s.skip must not be negative", f)
		case a.Cells != nil && *a.Cells < 0:
			return bad("%s.cells must not be negative (0 means every cell)", f)
		case a.Fraction <= 0 || a.Fraction > 1 || math.IsNaN(a.Fraction):
			return bad("%s.fraction must be in (0, 1]", f)
		case a.Behaviour == "delay" && (a.Delay.Duration <= 0 || a.Delay.Duration > MaxCellDelay):
			return bad("%s.delay must be in (0, %v] for behaviour delay", f, MaxCellDelay)
		case a.Behaviour != "delay" && a.Delay.Duration != 0:
			return bad("%s.delay is only for behaviour delay", f)
		case a.Behaviour == "passive" && (a.Skip != 0 || a.Cells != nil || a.Fraction != 1):
			return bad("%s: a passive relay takes no skip, cells or fraction", f)
		}
		if a.Region != "" {
			if err := s.checkRegion(f+".region", a.Region); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Scenario) validateEvents() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("scenario %q: "+f, append([]any{s.Name}, a...)...) }
	for i, e := range s.Events {
		f := fmt.Sprintf("events[%d]", i)
		if e.At.Duration < 0 || e.For.Duration < 0 {
			return bad("%s: at and for must not be negative", f)
		}
		if e.Action != "create-flood" && (e.Target != "" || e.Attackers != 0 || e.Rate != 0) {
			return bad("%s: target, attackers and rate are only for create-flood", f)
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
		case "create-flood":
			switch {
			case e.Attackers < 1 || e.Attackers > MaxAttackers:
				return bad("%s.attackers must be 1..%d", f, MaxAttackers)
			case e.Rate <= 0 || e.Rate > MaxFloodRate || math.IsNaN(e.Rate):
				return bad("%s.rate (CREATEs per second per attacker) must be in (0, %d]", f, MaxFloodRate)
			case e.Target != "" && !s.relayName(e.Target):
				return bad("%s.target: no relay %q (honest relays are relay0..relay%d, adversaries' bad%d..bad%d)",
					f, e.Target, s.Relays.Count-1, s.Relays.Count, s.Relays.Count+s.adversaryRelays()-1)
			}
		default:
			return bad("%s.action must be crash, authority-offline, partition or create-flood, not %q", f, e.Action)
		}
	}
	return nil
}

// relayName reports whether name is a relay of the scenario: honest relay
// i is "relay<i>"; the adversaries' relays follow them as "bad<i>".
func (s *Scenario) relayName(name string) bool {
	lo, hi := 0, s.Relays.Count
	n, ok := strings.CutPrefix(name, "relay")
	if !ok {
		lo, hi = s.Relays.Count, s.Relays.Count+s.adversaryRelays()
		if n, ok = strings.CutPrefix(name, "bad"); !ok {
			return false
		}
	}
	i, err := strconv.Atoi(n)
	return err == nil && i >= lo && i < hi && strconv.Itoa(i) == n
}

func (s *Scenario) adversaryRelays() int {
	n := 0
	for _, a := range s.Adversary {
		n += a.Count
	}
	return n
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

// Validate checks a bandwidth distribution (Parse does it for scenarios).
func (b *Bandwidth) Validate() error { return b.validate() }
