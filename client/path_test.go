package client

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
	"slices"
	"testing"

	"github.com/veilnet/veil/directory"
)

func testConsensus(t *testing.T, addrs []string, exits map[int]string) *directory.Consensus {
	t.Helper()
	cons := &directory.Consensus{}
	for i, a := range addrs {
		var id directory.RelayID
		rand.Read(id[:])
		p := directory.RejectAllPolicy()
		flags := directory.FlagRunning | directory.FlagValid | directory.FlagGuard | directory.FlagFast | directory.FlagStable
		if pol, ok := exits[i]; ok {
			var err error
			if p, err = directory.ParseExitPolicy(pol); err != nil {
				t.Fatal(err)
			}
			flags |= directory.FlagExit
		}
		cons.Relays = append(cons.Relays, directory.RouterStatus{
			Nickname: "r", ID: id, Address: netip.MustParseAddrPort(a), Bandwidth: 1000, Flags: flags, ExitPolicy: p})
	}
	// A consensus lists relays sorted by ID (Consensus.Relay relies on it).
	slices.SortFunc(cons.Relays, func(a, b directory.RouterStatus) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return cons
}

func testClient(t *testing.T, cons *directory.Consensus) *Client {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	c, err := New(Config{Network: &directory.Network{Name: "t", Authorities: []directory.AuthorityInfo{{Name: "a", Address: "127.0.0.1:1", Identity: k.Public().(ed25519.PublicKey)}}}})
	if err != nil {
		t.Fatal(err)
	}
	c.consensus = cons
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPickPathConstraints(t *testing.T) {
	cons := testConsensus(t, []string{
		"10.1.0.1:1", "10.1.0.2:1", // same /16
		"10.2.0.1:1", "10.3.0.1:1", "10.4.0.1:1",
		"10.5.0.1:1",
	}, map[int]string{0: "accept *:443,reject *:*", 5: "accept *:80,reject *:*"})
	c := testClient(t, cons)
	for range 300 {
		path, err := c.pickPath(80)
		if err != nil {
			t.Fatal(err)
		}
		if len(path) != 3 {
			t.Fatalf("path of %d hops", len(path))
		}
		exit := path[2]
		if !exit.ExitPolicy.AllowsPort(80) {
			t.Fatalf("exit %v does not allow port 80", exit.Address)
		}
		seen := map[netip.Prefix]bool{}
		ids := map[directory.RelayID]bool{}
		for _, r := range path {
			p, _ := r.Address.Addr().Prefix(16)
			if seen[p] || ids[r.ID] {
				t.Fatalf("path reuses a relay or a /16: %v", path)
			}
			seen[p], ids[r.ID] = true, true
		}
	}
	if _, err := c.pickPath(22); err != ErrNoPath {
		t.Fatalf("no exit allows port 22, got %v", err)
	}
}

func TestGuardIsKept(t *testing.T) {
	cons := testConsensus(t, []string{"10.1.0.1:1", "10.2.0.1:1", "10.3.0.1:1", "10.4.0.1:1", "10.5.0.1:1", "10.6.0.1:1"},
		map[int]string{0: "accept *:*", 1: "accept *:*"})
	c := testClient(t, cons)
	first, err := c.pickPath(80)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		p, err := c.pickPath(80)
		if err != nil {
			t.Fatal(err)
		}
		// The first guard in the sample is always the first hop.
		if p[0].ID != first[0].ID {
			t.Fatalf("guard changed from %v to %v", first[0].Address, p[0].Address)
		}
	}
}

// TestWeightedPickFollowsBandwidth: a relay with 9x the bandwidth is chosen
// far more often. The bound is loose (the expected share is 0.9; with 4000
// draws the standard deviation is under 0.005), so the test cannot flake.
func TestWeightedPickFollowsBandwidth(t *testing.T) {
	cons := testConsensus(t, []string{"10.1.0.1:1", "10.2.0.1:1"}, nil)
	cons.Relays[0].Bandwidth = 9000
	n := 0
	for range 4000 {
		if weightedPick(cons, rand.Reader, roleExit, func(*directory.RouterStatus) bool { return true }) == &cons.Relays[0] {
			n++
		}
	}
	if share := float64(n) / 4000; share < 0.85 || share > 0.95 {
		t.Fatalf("heavy relay chosen %.3f of the time, want about 0.9", share)
	}
}

func TestSameSubnet(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"127.1.0.1", "127.1.9.9", true},
		{"127.1.0.1", "127.2.0.1", false},
		{"2001:db8:1::1", "2001:db8:2::1", true},
		{"2001:db8::1", "2001:db9::1", false},
		{"10.0.0.1", "::ffff:10.0.9.9", true},
		{"10.0.0.1", "2001:db8::1", false},
	} {
		if got := sameSubnet(netip.MustParseAddr(c.a), netip.MustParseAddr(c.b)); got != c.want {
			t.Errorf("sameSubnet(%s, %s) = %v", c.a, c.b, got)
		}
	}
}
