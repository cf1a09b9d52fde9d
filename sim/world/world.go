// Package world is the simulation driver: it runs veil's protocol core —
// circuit.ClientCircuit and circuit.RelayCircuit with real hybrid
// handshakes and layered cell crypto, the directory authorities of
// directory/dirtest, the client's guard code — over the simulated network
// of sim/simnet, in virtual time, single-threaded and deterministic for a
// seed.
//
// The driver is plumbing, like package relay and package client are for
// the daemons: circuit tables per link, forwarding, EXTEND turned into
// CREATE on the next link, exit streams to simulated servers, a circuit
// manager and traffic models for clients. Every protocol decision is made
// by the core. What is modelled rather than real is listed in
// docs/simulator.md.
package world

import (
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/directory/dirtest"
	"github.com/veilnet/veil/sim/report"
	"github.com/veilnet/veil/sim/scenario"
	"github.com/veilnet/veil/sim/simnet"
)

// World is one simulated network.
type World struct {
	sc   *scenario.Scenario
	sim  *simnet.Sim
	net  *simnet.Network
	rng  *simnet.Rand // scenario-level draws: placement, bandwidths, events
	m    *report.Metrics
	dir  *dirState
	cons *directory.Consensus // the latest consensus clients use

	relays  []*Relay
	byID    map[directory.RelayID]*Relay // lookup only
	byNode  map[simnet.NodeID]*Relay     // lookup only
	servers []*server
	// serverNames finds servers by host name (lookup only).
	serverNames map[string]*server
	clients     []*Client
	end         time.Time
	// scratch holds the actions of a circuit call whose cells are sent at
	// once (exit.go): one buffer for the world rather than one per
	// circuit, which kept every exit circuit's largest batch alive.
	scratch circuit.RelayActions
	// attack is the adversary's bookkeeping (adversary.go, flood.go);
	// nil until first used.
	attack *attackState
	// vopr is the invariant checker of a VOPR run (vopr.go); nil
	// otherwise.
	vopr *vopr
}

// server is a destination: it serves a file of the size a request asks
// for. It is not a network node: exits reach it with the latency between
// their regions (see exit.go).
type server struct {
	name   string
	region int
	addr   netip.Addr
}

// New builds the world of sc for seed: keys, descriptors, the first
// consensus (made before the clock starts), nodes and traffic. It is
// deterministic in (sc, seed).
func New(sc *scenario.Scenario, seed uint64) (*World, error) {
	s := simnet.New(seed)
	lat := make([][]time.Duration, len(sc.Network.LatencyMS))
	for i, row := range sc.Network.LatencyMS {
		for _, ms := range row {
			lat[i] = append(lat[i], time.Duration(ms*float64(time.Millisecond)))
		}
	}
	w := &World{
		sc: sc, sim: s, rng: s.Stream("world"), m: report.NewMetrics(),
		net:    simnet.NewNetwork(s, simnet.Config{Latency: lat, Jitter: sc.Network.Jitter, Loss: sc.Network.Loss}),
		byID:   map[directory.RelayID]*Relay{},
		byNode: map[simnet.NodeID]*Relay{},
		end:    simnet.Epoch.Add(sc.Duration.Duration),
	}
	w.m.Scenario, w.m.Seed = sc.Name, seed
	w.m.VirtualSeconds = sc.Duration.Seconds()
	w.m.Authorities = sc.Directory.Authorities
	if err := w.addRelays(); err != nil {
		return nil, err
	}
	w.addServers()
	if err := w.bootDirectory(); err != nil {
		return nil, err
	}
	w.addClients()
	w.scheduleEvents()
	return w, nil
}

// Sim is the simulation clock.
func (w *World) Sim() *simnet.Sim { return w.sim }

// End is the virtual time at which the scenario ends.
func (w *World) End() time.Time { return w.end }

// RunUntil advances the simulation to t (at most End).
func (w *World) RunUntil(t time.Time) {
	if t.After(w.end) {
		t = w.end
	}
	w.sim.Run(t)
}

// Done reports whether the scenario has reached its end.
func (w *World) Done() bool { return !w.sim.Now().Before(w.end) }

// Metrics finishes and returns the metrics. Call it once, after the run.
func (w *World) Metrics() *report.Metrics {
	w.m.CellEvents = w.sim.Events()
	dur := w.sim.Elapsed().Seconds()
	w.m.RelayStats = w.m.RelayStats[:0]
	w.m.Adversary.CircuitsThrough = 0
	w.m.Adversary.NeverArrived = w.neverArrived()
	for _, r := range w.relays {
		if r.behaviour != "" {
			w.m.Adversary.CircuitsThrough += r.circuits
		}
		st := report.RelayStats{Name: r.name, RateBytes: r.node.UpRate, BytesSent: r.node.BytesSent,
			Circuits: r.circuits, Malicious: r.behaviour, IntegrityFail: r.integrityFail,
			CrashedFor: r.downFor.Seconds()}
		if rs := w.cons.Relay(r.id); rs != nil {
			st.Flags = rs.Flags.String()
		}
		if dur > 0 && r.node.UpRate > 0 {
			st.Utilization = float64(r.node.BusyNanos) / 1e9 / dur
		}
		w.m.RelayStats = append(w.m.RelayStats, st)
	}
	return w.m
}

// pick draws a key of weights in proportion to its weight (uniform over
// all regions if weights is empty).
func (w *World) pickRegion(weights map[string]float64, rng *simnet.Rand) int {
	if len(weights) == 0 {
		return rng.IntN(len(w.sc.Network.Regions))
	}
	keys := scenario.SortedKeys(weights)
	total := 0.0
	for _, k := range keys {
		total += weights[k]
	}
	x := rng.Float64() * total
	for _, k := range keys {
		x -= weights[k]
		if x < 0 {
			return w.sc.RegionIndex(k)
		}
	}
	return w.sc.RegionIndex(keys[len(keys)-1])
}

// relayAddr is relay i's address: every relay in its own /16.
func relayAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(20 + i/200), byte(i % 200), 1, 1})
}

func (w *World) bandwidth(b scenario.Bandwidth) float64 {
	var mbit float64
	switch b.Distribution {
	case "lognormal":
		mbit = w.rng.LogNormal(b.MedianMbit, b.Sigma)
	case "pareto":
		mbit = w.rng.Pareto(b.MedianMbit, b.Alpha)
	default:
		mbit = b.MedianMbit
	}
	return min(max(mbit, b.MinMbit), b.MaxMbit) * 1e6 / 8
}

// addRelays makes the honest relays, then the adversaries' relays: keys
// from the seeded stream, signed descriptors, nodes.
func (w *World) addRelays() error {
	sc := w.sc
	nExit := max(1, int(float64(sc.Relays.Count)*sc.Relays.ExitFraction+0.5))
	keys := w.sim.Stream("relay keys")
	type spec struct {
		rate      float64
		region    int
		exit      bool
		behaviour string
	}
	var specs []spec
	for i := range sc.Relays.Count {
		specs = append(specs, spec{rate: w.bandwidth(sc.Relays.Bandwidth), region: w.pickRegion(sc.Relays.Regions, w.rng), exit: i < nExit})
	}
	w.rng.Shuffle(len(specs), func(i, j int) { specs[i], specs[j] = specs[j], specs[i] })
	for _, a := range sc.Adversary {
		for range a.Count {
			region := w.pickRegion(sc.Relays.Regions, w.rng)
			if a.Region != "" {
				region = sc.RegionIndex(a.Region)
			}
			specs = append(specs, spec{rate: a.BandwidthMbit * 1e6 / 8, region: region, exit: a.Exit, behaviour: a.Behaviour})
		}
	}
	exitPolicy, err := directory.ParseExitPolicy("reject private:*, accept *:*")
	if err != nil {
		return err
	}
	for i, sp := range specs {
		var seed [ed25519.SeedSize]byte
		keys.Read(seed[:])
		idKey := ed25519.NewKeyFromSeed(seed[:])
		onion, err := crypto.GenerateOnionKey(keys)
		if err != nil {
			return err
		}
		link, err := crypto.GenerateStaticKey(keys)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("relay%d", i)
		if sp.behaviour != "" {
			name = fmt.Sprintf("bad%d", i)
		}
		policy := directory.RejectAllPolicy()
		if sp.exit {
			policy = exitPolicy
		}
		addr := relayAddr(i)
		d := &directory.Descriptor{
			Nickname: name, Identity: idKey.Public().(ed25519.PublicKey),
			LinkKey: link.Public, OnionKey: onion.X25519.Public, OnionKeyPQ: onion.KEMPublic[:],
			Address: netip.AddrPortFrom(addr, 9001), Bandwidth: int64(sp.rate),
			ExitPolicy: policy, Platform: "veil sim", Published: descriptorTime(),
		}
		r := &Relay{w: w, name: name, key: idKey, onion: onion, linkKey: link.Public, behaviour: sp.behaviour,
			dt: &dirtest.Relay{Key: idKey, Desc: d, Alive: true}, rand: w.sim.Stream("relay " + name)}
		r.id = d.ID()
		r.node = w.net.AddNode(name, sp.region, addr, sp.rate, nil)
		r.start()
		w.relays = append(w.relays, r)
		w.byID[r.id] = r
		w.byNode[r.node.ID] = r
	}
	w.m.Relays = len(w.relays)
	return nil
}

func (w *World) addServers() {
	w.serverNames = map[string]*server{}
	for i := range w.sc.Servers.Count {
		s := &server{
			name:   fmt.Sprintf("srv%d.example", i),
			region: w.pickRegion(w.sc.Servers.Regions, w.rng),
			addr:   netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(1 + i%250)}),
		}
		w.servers = append(w.servers, s)
		w.serverNames[s.name] = s
	}
}

// serverByName finds a server by host name (nil: "does not resolve").
func (w *World) serverByName(host string) *server { return w.serverNames[host] }

// event records a scenario event in the metrics.
func (w *World) event(format string, a ...any) {
	w.m.Events = append(w.m.Events, report.EventRecord{AtSeconds: w.sim.Elapsed().Seconds(), What: fmt.Sprintf(format, a...)})
}
