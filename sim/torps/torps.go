// Package torps is a TorPS-style path-compromise analysis (Johnson et
// al., "Users Get Routed", CCS 2013): an adversary adds relays holding a
// share of the network's guard and exit bandwidth, and clients use veil's
// own guard and path-selection code (client.UpdateGuards,
// client.ChoosePath, GuardSet.MarkConnected) over simulated days. A
// stream is compromised when the adversary runs both its circuit's guard
// and its exit: it sees both ends and can link the client to the
// destination by timing. The analysis reports the fraction of streams
// compromised and the fraction of clients compromised at least once, and
// when.
//
// No packets are simulated: path selection needs only the consensus, the
// clock and randomness. The model (docs/simulator.md, "Path-compromise
// analysis"):
//
//   - One consensus for the whole period, built from a scenario's
//     [relays] table (count, bandwidth distribution, exit share): every
//     relay Running, Valid, Fast and Stable; the faster half Guard (Tor
//     gives Guard to relays of at least the median bandwidth, among other
//     rules); the exits accept every port but private addresses. Each
//     relay has its own /16 and no family.
//   - The adversary adds Relays guard relays (Guard, not Exit) and Relays
//     exit relays (Exit, not Guard), with bandwidth chosen so that they
//     hold Share of the guard-position weight of the Guard relays and
//     Share of the exit-position weight of the exits, as client.ChoosePath
//     weighs them. Its relays are in distinct /16s and declare no family,
//     so one circuit may use two of them.
//   - Each client is active once a day for Session, starting at a uniform
//     time of day, and opens a stream (port Port) after exponential think
//     times of mean Think: the web model of sim/world. A stream goes on
//     the client's current circuit while it is younger than
//     world.MaxDirtiness since its first stream (Tor's 10 minutes), and
//     on a new circuit otherwise. Guards are sampled when the client
//     starts and kept by client.UpdateGuards' rules (lifetime 60 to 90
//     days), updated at each circuit.
//
// Every client draws its traffic from one random stream and its paths
// from another, both keyed by (seed, client): traffic is the same for
// every share, and results are deterministic for a seed.
package torps

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"time"

	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/sim/scenario"
	"github.com/veilnet/veil/sim/simnet"
	"github.com/veilnet/veil/sim/world"
)

// Config is one analysis.
type Config struct {
	Network scenario.Relays // the honest relays
	Clients int
	Days    int
	Shares  []float64 // adversary's share of guard and of exit weight, each in [0, 1)
	// Relays is how many guard and how many exit relays the adversary
	// adds (the share is split evenly); default 1.
	Relays  int
	Session time.Duration // daily activity (default 2h)
	Think   time.Duration // mean time between streams (default 20s)
	Port    uint16        // default 443
	Seed    uint64
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	if c.Clients == 0 {
		c.Clients = 1000
	}
	if c.Days == 0 {
		c.Days = 30
	}
	if c.Relays == 0 {
		c.Relays = 1
	}
	if c.Session == 0 {
		c.Session = 2 * time.Hour
	}
	if c.Think == 0 {
		c.Think = 20 * time.Second
	}
	if c.Port == 0 {
		c.Port = 443
	}
}

// Limits keep a typo from running for hours.
const (
	MaxClients = 1_000_000
	MaxDays    = 3650
)

func (c *Config) validate() error {
	switch {
	case c.Network.Count < 3 || c.Network.Count > scenario.MaxRelays:
		return fmt.Errorf("torps: need 3..%d honest relays", scenario.MaxRelays)
	case c.Clients < 1 || c.Clients > MaxClients:
		return fmt.Errorf("torps: clients must be 1..%d", MaxClients)
	case c.Days < 1 || c.Days > MaxDays:
		return fmt.Errorf("torps: days must be 1..%d", MaxDays)
	case c.Relays < 1 || c.Relays > 1000:
		return errors.New("torps: adversary relays must be 1..1000")
	case c.Session <= 0 || c.Session > 24*time.Hour || c.Think <= 0:
		return errors.New("torps: session must be in (0, 24h] and think positive")
	case len(c.Shares) == 0:
		return errors.New("torps: no shares to analyse")
	}
	for _, s := range c.Shares {
		if s < 0 || s >= 1 || math.IsNaN(s) {
			return fmt.Errorf("torps: share %v is not in [0, 1)", s)
		}
	}
	return nil
}

// Result is the analysis for one share.
type Result struct {
	Share              float64 `json:"share"`
	Clients            int     `json:"clients"`
	Days               int     `json:"days"`
	Streams            int     `json:"streams"`
	Circuits           int     `json:"circuits"`
	CompromisedStreams int     `json:"compromised_streams"`
	CompromisedClients int     `json:"compromised_clients"`
	// BadGuardClients had an adversary relay as the guard of their first
	// circuit.
	BadGuardClients int `json:"bad_guard_clients"`
	// FirstCompromiseDays holds, for each compromised client, the time of
	// its first compromised stream, in days, sorted.
	FirstCompromiseDays []float64 `json:"first_compromise_days"`
}

// StreamRate is the share of streams compromised.
func (r *Result) StreamRate() float64 { return ratio(r.CompromisedStreams, r.Streams) }

// ClientRate is the share of clients compromised at least once.
func (r *Result) ClientRate() float64 { return ratio(r.CompromisedClients, r.Clients) }

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Run analyses every share in cfg.Shares.
func Run(cfg Config) ([]Result, error) {
	cfg.Defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	honest, err := honestRelays(cfg)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, s := range cfg.Shares {
		cons, bad := withAdversary(honest, s, cfg.Relays)
		out = append(out, run(cfg, s, cons, bad))
	}
	return out, nil
}

// start is when clients start.
var start = simnet.Epoch

func run(cfg Config, share float64, cons *directory.Consensus, bad map[directory.RelayID]bool) Result {
	res := Result{Share: share, Clients: cfg.Clients, Days: cfg.Days}
	end := start.Add(time.Duration(cfg.Days) * 24 * time.Hour)
	req := client.PathRequest{Port: cfg.Port, Stable: client.NeedsStable(cfg.Port), Length: 3}
	for i := range cfg.Clients {
		traffic := simnet.NewRand(cfg.Seed, fmt.Sprintf("torps traffic %d", i))
		paths := simnet.NewRand(cfg.Seed, fmt.Sprintf("torps paths %d", i))
		gs := client.UpdateGuards(client.GuardSet{}, cons, start, paths)
		var (
			path       []*directory.RouterStatus
			dirty      time.Time
			compromise time.Time
			first      = true
		)
		for day := start; day.Before(end); day = day.Add(24 * time.Hour) {
			begin := day.Add(time.Duration(traffic.Uint64() % uint64(24*time.Hour-cfg.Session+1)))
			for t := begin.Add(traffic.Exp(cfg.Think)); t.Before(begin.Add(cfg.Session)) && t.Before(end); t = t.Add(traffic.Exp(cfg.Think)) {
				if path == nil || t.Sub(dirty) >= world.MaxDirtiness {
					gs = client.UpdateGuards(gs, cons, t, paths)
					p, err := client.ChoosePath(&gs, cons, t, paths, req)
					if err != nil {
						continue // cannot happen with a static, healthy consensus
					}
					gs.MarkConnected(p[0].ID, t)
					path, dirty = p, t
					res.Circuits++
					if first && bad[p[0].ID] {
						res.BadGuardClients++
					}
					first = false
				}
				res.Streams++
				if bad[path[0].ID] && bad[path[len(path)-1].ID] {
					res.CompromisedStreams++
					if compromise.IsZero() {
						compromise = t
					}
				}
			}
		}
		if !compromise.IsZero() {
			res.CompromisedClients++
			res.FirstCompromiseDays = append(res.FirstCompromiseDays, compromise.Sub(start).Hours()/24)
		}
	}
	sort.Float64s(res.FirstCompromiseDays)
	return res
}

// honestRelays builds the honest relays of the consensus.
func honestRelays(cfg Config) ([]directory.RouterStatus, error) {
	b := cfg.Network.Bandwidth
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("torps: relays.bandwidth: %w", err)
	}
	policy, err := directory.ParseExitPolicy("reject private:*, accept *:*")
	if err != nil {
		return nil, err
	}
	rng := simnet.NewRand(cfg.Seed, "torps network")
	n := cfg.Network.Count
	nExit := max(1, int(float64(n)*cfg.Network.ExitFraction+0.5))
	rs := make([]directory.RouterStatus, n)
	bws := make([]int64, n)
	for i := range rs {
		var mbit float64
		switch b.Distribution {
		case "lognormal":
			mbit = rng.LogNormal(b.MedianMbit, b.Sigma)
		case "pareto":
			mbit = rng.Pareto(b.MedianMbit, b.Alpha)
		default:
			mbit = b.MedianMbit
		}
		bws[i] = int64(min(max(mbit, b.MinMbit), b.MaxMbit) * 1e6 / 8)
		r := relayStatus(rng, i, fmt.Sprintf("relay%d", i), bws[i], directory.FlagRunning|directory.FlagValid|directory.FlagFast|directory.FlagStable)
		if i < nExit {
			r.Flags |= directory.FlagExit
			r.ExitPolicy = policy
		}
		rs[i] = r
	}
	// Guard: at least the median bandwidth.
	sorted := append([]int64(nil), bws...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	median := sorted[len(sorted)/2]
	for i := range rs {
		if bws[i] >= median {
			rs[i].Flags |= directory.FlagGuard
		}
	}
	return rs, nil
}

// relayStatus is relay i: a random identity and its own /16.
func relayStatus(rng *simnet.Rand, i int, name string, bw int64, flags directory.Flags) directory.RouterStatus {
	r := directory.RouterStatus{Nickname: name, Bandwidth: max(bw, 1), Flags: flags,
		Address:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(20 + i/200), byte(i % 200), 1, 1}), 9001),
		ExitPolicy: directory.RejectAllPolicy()}
	rng.Read(r.ID[:])
	return r
}

// withAdversary returns the consensus of the honest relays plus the
// adversary's relays for share, and the set of the adversary's relays.
func withAdversary(honest []directory.RouterStatus, share float64, k int) (*directory.Consensus, map[directory.RelayID]bool) {
	relays := append([]directory.RouterStatus(nil), honest...)
	bad := map[directory.RelayID]bool{}
	if share > 0 {
		var guardW, exitW float64
		for i := range honest {
			r := &honest[i]
			if r.Flags.Has(directory.FlagGuard) {
				// ChoosePath weighs an exit in the guard position at a third.
				w := float64(r.Bandwidth)
				if r.Flags.Has(directory.FlagExit) {
					w /= 3
				}
				guardW += w
			}
			if r.Flags.Has(directory.FlagExit) {
				exitW += float64(r.Bandwidth)
			}
		}
		policy, _ := directory.ParseExitPolicy("reject private:*, accept *:*")
		rng := simnet.NewRand(uint64(math.Float64bits(share)), "torps adversary")
		base := directory.FlagRunning | directory.FlagValid | directory.FlagFast | directory.FlagStable
		for j := range k {
			g := relayStatus(rng, len(honest)+2*j, fmt.Sprintf("badguard%d", j),
				int64(share/(1-share)*guardW/float64(k)), base|directory.FlagGuard)
			e := relayStatus(rng, len(honest)+2*j+1, fmt.Sprintf("badexit%d", j),
				int64(share/(1-share)*exitW/float64(k)), base|directory.FlagExit)
			e.ExitPolicy = policy
			relays = append(relays, g, e)
			bad[g.ID], bad[e.ID] = true, true
		}
	}
	sort.Slice(relays, func(i, j int) bool { return string(relays[i].ID[:]) < string(relays[j].ID[:]) })
	return &directory.Consensus{ValidAfter: start, FreshUntil: start.Add(time.Hour), ValidUntil: start.Add(3 * time.Hour), Relays: relays}, bad
}
