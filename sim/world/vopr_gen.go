package world

import (
	"fmt"
	"strings"
	"time"

	"github.com/veilnet/veil/sim/scenario"
	"github.com/veilnet/veil/sim/simnet"
)

// The VOPR scenario generator: one seed draws a small network and a
// schedule of faults, written as a scenario file (so a run can also be
// replayed, or edited, with `veil sim --scenario FILE`) and parsed by
// package scenario like any other. Every draw comes from the stream
// "vopr scenario" of the seed; the world then runs with the same seed.

// VOPRGen is a generated scenario.
type VOPRGen struct {
	Scenario *scenario.Scenario
	TOML     string   // the scenario file
	Faults   []string // the faults drawn, in a few words each
	Traffic  time.Duration
}

// Summary describes the network and the faults on one line.
func (g *VOPRGen) Summary() string {
	sc := g.Scenario
	clients := 0
	for _, c := range sc.Clients {
		clients += c.Count
	}
	f := "no faults"
	if len(g.Faults) > 0 {
		f = fmt.Sprintf("%d faults (%s)", len(g.Faults), strings.Join(g.Faults, ", "))
	}
	return fmt.Sprintf("%d relays, %d authorities, %d clients, %v of traffic, %s",
		sc.Relays.Count, sc.Directory.Authorities, clients, g.Traffic, f)
}

// VOPRScenario draws the scenario of seed: 6 to 30 relays, 1 to 5
// authorities, 1 to 3 regions, 1 to 4 client groups of the three traffic
// models, 1 to 3 minutes of traffic followed by VOPRDrain, and faults:
// cell loss, 0 to 2 adversary groups (tag, drop, delay or passive, with
// random skip, cells, fraction and delay), and 0 to 5 events (relay
// crashes with or without restart, partitions, authority outages, CREATE
// floods that end before the clients stop).
func VOPRScenario(seed uint64) (*VOPRGen, error) {
	r := simnet.NewRand(seed, "vopr scenario")
	g := &VOPRGen{}
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	dur := func(d time.Duration) string { return fmt.Sprintf("%q", d.Round(time.Millisecond).String()) }
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Uint64()%uint64(hi-lo+1)) }
	frac := func(lo, hi float64) float64 { return lo + r.Float64()*(hi-lo) }

	g.Traffic = between(time.Minute, 3*time.Minute).Round(time.Second)
	p("name = \"vopr-%d\"", seed)
	p("description = \"randomized fault run, seed %d\"", seed)
	p("duration = %s", dur(g.Traffic+VOPRDrain))
	p("seed = %d", seed)

	nreg := 1 + r.IntN(3)
	regions := make([]string, nreg)
	lat := make([][]int, nreg)
	for i := range regions {
		regions[i] = fmt.Sprintf("r%d", i)
		lat[i] = make([]int, nreg)
	}
	for i := range nreg {
		lat[i][i] = 5 + r.IntN(26)
		for j := i + 1; j < nreg; j++ {
			lat[i][j] = 20 + r.IntN(131)
			lat[j][i] = lat[i][j]
		}
	}
	p("[network]")
	p("regions = [%s]", quoteList(regions))
	rows := make([]string, nreg)
	for i, row := range lat {
		rows[i] = fmt.Sprintf("%v", row)
		rows[i] = strings.ReplaceAll(rows[i], " ", ", ")
	}
	p("latency_ms = [%s]", strings.Join(rows, ", "))
	p("jitter = %.3f", frac(0, 0.3))
	if r.IntN(2) == 0 {
		loss := frac(0.001, 0.02)
		p("loss = %.4f", loss)
		g.Faults = append(g.Faults, fmt.Sprintf("%.1f%% loss", 100*loss))
	}

	auths := 1 + r.IntN(5)
	p("[directory]")
	p("authorities = %d", auths)

	relays := 6 + r.IntN(25)
	p("[relays]")
	p("count = %d", relays)
	p("exit_fraction = %.2f", frac(0.2, 0.6))
	p("bandwidth = { distribution = \"lognormal\", median_mbit = %d, sigma = %.2f, min_mbit = 2, max_mbit = 200 }",
		5+r.IntN(36), frac(0.5, 1.5))
	p("cpu_cores = %d", 1+r.IntN(2))

	p("[servers]")
	p("count = %d", 1+r.IntN(3))

	start := func() {
		p("start = %s", dur(between(0, 20*time.Second)))
		p("spread = %s", dur(between(0, 30*time.Second)))
	}
	for i := range 1 + r.IntN(4) {
		p("[[clients]]")
		p("name = \"c%d\"", i)
		p("count = %d", 1+r.IntN(2))
		switch r.IntN(3) {
		case 0:
			p("model = \"onionperf\"")
			p("interval = %s", dur(between(20*time.Second, time.Minute)))
			p("sizes_kib = [%d, %d]", 16+r.IntN(100), 128+r.IntN(900))
		case 1:
			p("model = \"bulk\"")
			p("size_kib = %d", 64+r.IntN(1985))
		default:
			p("model = \"web\"")
			p("page_kib = %d", 50+r.IntN(351))
			p("think = %s", dur(between(5*time.Second, 30*time.Second)))
			p("users = %d", 1+r.IntN(3))
		}
		start()
	}

	for range r.IntN(3) {
		beh := []string{"tag", "drop", "delay", "passive"}[r.IntN(4)]
		n := 1 + r.IntN(2)
		p("[[adversary]]")
		p("count = %d", n)
		p("behaviour = %q", beh)
		p("bandwidth_mbit = %d", 5+r.IntN(46))
		p("exit = %v", r.IntN(2) == 0)
		desc := fmt.Sprintf("%d %s relay(s)", n, beh)
		if beh != "passive" {
			skip := r.IntN(8)
			p("skip = %d", skip)
			if r.IntN(2) == 0 {
				p("cells = %d", r.IntN(4))
			}
			if r.IntN(2) == 0 {
				p("fraction = %.2f", frac(0.05, 1))
			}
			if beh == "delay" {
				d := between(5*time.Millisecond, 2*time.Second)
				p("delay = %s", dur(d))
			}
		}
		g.Faults = append(g.Faults, desc)
	}

	// Events fall within the traffic; those that must be undone for the
	// end-of-run check (partitions, floods) are undone before the stop.
	for range r.IntN(6) {
		at := between(5*time.Second, g.Traffic-10*time.Second)
		left := g.Traffic - at - time.Second
		kind := r.IntN(4)
		if kind == 1 && nreg < 2 {
			kind = 0
		}
		p("[[events]]")
		p("at = %s", dur(at))
		switch kind {
		case 0:
			n := 1 + r.IntN(max(1, relays/4))
			p("action = \"crash\"")
			p("count = %d", n)
			what := fmt.Sprintf("%d relays crash", n)
			if r.IntN(3) > 0 {
				d := between(5*time.Second, 2*time.Minute)
				p("for = %s", dur(d))
				what += " and restart"
			}
			g.Faults = append(g.Faults, what)
		case 1:
			reg := regions[r.IntN(nreg)]
			p("action = \"partition\"")
			p("region = %q", reg)
			p("for = %s", dur(min(between(2*time.Second, time.Minute), left)))
			g.Faults = append(g.Faults, "partition of "+reg)
		case 2:
			a := r.IntN(auths)
			p("action = \"authority-offline\"")
			p("authority = %d", a)
			if r.IntN(2) == 0 {
				p("for = %s", dur(between(10*time.Second, 2*time.Minute)))
			}
			g.Faults = append(g.Faults, fmt.Sprintf("authority %d offline", a))
		default:
			p("action = \"create-flood\"")
			p("target = \"relay%d\"", r.IntN(relays))
			p("attackers = %d", 1+r.IntN(3))
			p("rate = %d", 5+r.IntN(36))
			p("for = %s", dur(min(between(5*time.Second, time.Minute), left)))
			g.Faults = append(g.Faults, "CREATE flood")
		}
	}
	g.TOML = b.String()
	sc, err := scenario.Parse([]byte(g.TOML))
	if err != nil {
		return nil, fmt.Errorf("vopr: seed %d drew an invalid scenario: %w", seed, err)
	}
	g.Scenario = sc
	return g, nil
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
