package torps

import (
	"bytes"
	"encoding/xml"
	"testing"

	"github.com/veilnet/veil/sim/scenario"
)

func testConfig(t *testing.T, shares ...float64) Config {
	t.Helper()
	sc, err := scenario.Load("tor-1pct")
	if err != nil {
		t.Fatal(err)
	}
	return Config{Network: sc.Relays, Clients: 300, Days: 5, Shares: shares, Seed: 1}
}

// TestCompromiseGrowsWithShare: an adversary with no relays compromises
// nothing; with more bandwidth it compromises more streams and more
// clients, on one seed, monotonically over several shares.
func TestCompromiseGrowsWithShare(t *testing.T) {
	cfg := testConfig(t, 0, 0.05, 0.1, 0.2, 0.4)
	rs, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + Table(cfg, rs))
	if r := rs[0]; r.CompromisedStreams != 0 || r.CompromisedClients != 0 || r.BadGuardClients != 0 {
		t.Errorf("share 0: %d streams, %d clients compromised", r.CompromisedStreams, r.CompromisedClients)
	}
	for i, r := range rs {
		if r.Streams < 100*cfg.Clients || r.Circuits < 10*cfg.Clients {
			t.Errorf("share %v: only %d streams on %d circuits", r.Share, r.Streams, r.Circuits)
		}
		if len(r.FirstCompromiseDays) != r.CompromisedClients {
			t.Errorf("share %v: %d first-compromise times for %d clients", r.Share, len(r.FirstCompromiseDays), r.CompromisedClients)
		}
		if i == 0 {
			continue
		}
		p := rs[i-1]
		if r.CompromisedStreams <= p.CompromisedStreams || r.CompromisedClients <= p.CompromisedClients {
			t.Errorf("share %v -> %v: streams %d -> %d, clients %d -> %d: not growing",
				p.Share, r.Share, p.CompromisedStreams, r.CompromisedStreams, p.CompromisedClients, r.CompromisedClients)
		}
	}
	// Guards dominate: a client is compromised only through a bad guard,
	// which about Share of the clients get (bandwidth-weighted sampling).
	if r := rs[len(rs)-1]; r.BadGuardClients < cfg.Clients/5 || r.CompromisedClients > r.BadGuardClients*3/2 {
		t.Errorf("share %v: %d clients with a bad first guard, %d compromised", r.Share, r.BadGuardClients, r.CompromisedClients)
	}
}

// TestDeterministic: one seed, one result; another seed, another.
func TestDeterministic(t *testing.T) {
	cfg := testConfig(t, 0.2)
	cfg.Clients, cfg.Days = 100, 3
	run := func(seed uint64) []byte {
		cfg.Seed = seed
		rs, err := Run(cfg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := JSON(cfg, rs)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, c := run(1), run(1), run(2)
	if !bytes.Equal(a, b) {
		t.Error("two runs with seed 1 differ")
	}
	if bytes.Equal(a, c) {
		t.Error("seeds 1 and 2 gave the same results")
	}
}

// TestHTMLIsWellFormed: the report parses as XML (its SVG inline).
func TestHTMLIsWellFormed(t *testing.T) {
	cfg := testConfig(t, 0.1, 0.3)
	cfg.Clients, cfg.Days = 50, 2
	rs, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := HTML(cfg, rs)
	d := xml.NewDecoder(bytes.NewReader(bytes.TrimPrefix(h, []byte("<!DOCTYPE html>\n"))))
	d.Strict = false
	for {
		if _, err := d.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("report: %v", err)
			}
			break
		}
	}
	if !bytes.Contains(h, []byte("<svg")) || !bytes.Contains(h, []byte("Time to first compromise")) {
		t.Error("report has no plot")
	}
}

func TestConfigRefused(t *testing.T) {
	for _, shares := range [][]float64{{1}, {-0.1}, nil} {
		cfg := testConfig(t, shares...)
		if _, err := Run(cfg); err == nil {
			t.Errorf("shares %v accepted", shares)
		}
	}
}
