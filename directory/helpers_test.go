package directory

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// testKey derives a deterministic Ed25519 key from a label.
func testKey(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("veil test key " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

// testTime is a fixed, interval-aligned instant.
var testTime = time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)

var testSchedule = Schedule{Interval: 10 * time.Second, VoteDelay: 2 * time.Second, SigDelay: 2 * time.Second}

// testDescriptor returns a valid descriptor of relay n and its key.
func testDescriptor(t testing.TB, n int) (*Descriptor, ed25519.PrivateKey) {
	t.Helper()
	priv := testKey(fmt.Sprintf("relay%d", n))
	d := &Descriptor{
		Nickname:  fmt.Sprintf("relay%d", n),
		Identity:  priv.Public().(ed25519.PublicKey),
		Address:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(n), 0, 1}), 9001),
		Bandwidth: int64(1000 * (n + 1)),
		Platform:  "veil 0.1 test",
		Published: testTime.Add(-time.Minute),
	}
	d.LinkKey[0], d.OnionKey[0] = byte(n), byte(n+1)
	d.OnionKeyPQ = testPQKey(n)
	if n < 2 { // relays 0 and 1: one operator, with a directory cache
		d.Family = []RelayID{RelayID(testKey(fmt.Sprintf("relay%d", 1-n)).Public().(ed25519.PublicKey))}
		d.Contact = "ops at example.org"
		d.DirAddress = netip.AddrPortFrom(d.Address.Addr(), 9030)
	}
	policy, err := ParseExitPolicy("reject *:*")
	if n%2 == 0 {
		policy, err = ParseExitPolicy("reject private:*, accept *:80, accept *:443, reject *:*")
	}
	if err != nil {
		t.Fatal(err)
	}
	d.ExitPolicy = policy
	return d, priv
}

// testPQKey returns a deterministic OnionKeyPQSize-byte key for relay n.
// Only its length is checked by this package.
func testPQKey(n int) []byte {
	out := make([]byte, 0, OnionKeyPQSize)
	for i := 0; len(out) < OnionKeyPQSize; i++ {
		h := sha256.Sum256([]byte(fmt.Sprintf("pq %d %d", n, i)))
		out = append(out, h[:]...)
	}
	return out[:OnionKeyPQSize]
}

// signDescriptor signs d with priv, failing the test on error.
func signDescriptor(t testing.TB, d *Descriptor, priv ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := d.Sign(priv)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return b
}

// testSigner returns a deterministic signer whose identity key is
// testKey(label), with a certificate valid from a day before testTime for
// 30 days.
func testSigner(label string) *Signer {
	id := &KeyPair{Ed: testKey(label)}
	k := &KeyPair{Ed: testKey(label + " signing")}
	c, err := IssueCert(id, k, testTime.Add(-24*time.Hour), testTime.Add(30*24*time.Hour))
	if err != nil {
		panic(err)
	}
	s, err := NewSigner(k, c)
	if err != nil {
		panic(err)
	}
	return s
}

// testNetwork returns a network of n authorities and their signers.
func testNetwork(n int) (*Network, []*Signer) {
	net := &Network{Name: "testnet"}
	var keys []*Signer
	for i := 0; i < n; i++ {
		k := testSigner(fmt.Sprintf("authority%d", i))
		keys = append(keys, k)
		net.Authorities = append(net.Authorities, AuthorityInfo{
			Name:     fmt.Sprintf("auth%d", i),
			Address:  fmt.Sprintf("127.0.%d.1:7000", i),
			Identity: k.Cert.Identity,
		})
	}
	return net, keys
}

// newAuth returns the voting logic of the authority with signer k.
func newAuth(net *Network, k *Signer) (*Authority, error) {
	return NewAuthority(AuthorityConfig{Network: net, Schedule: testSchedule, Signer: k})
}

// markReachable records a successful reachability test of every relay
// a holds.
func markReachable(a *Authority, now time.Time) {
	for _, t := range a.ReachabilityTargets(now) {
		a.RecordReachability(t, true, now)
	}
}

// testRound runs one full voting round among the given authorities, with
// uploads[i] the descriptors uploaded to authority i. Every authority
// receives every vote. It returns the authorities and the round.
func testRound(t testing.TB, net *Network, keys []*Signer, uploads [][][]byte) ([]*Authority, time.Time) {
	t.Helper()
	va := testSchedule.NextRound(testTime)
	voteAt := testSchedule.VoteTime(va)
	auths := make([]*Authority, len(keys))
	for i, k := range keys {
		a, err := newAuth(net, k)
		if err != nil {
			t.Fatalf("NewAuthority: %v", err)
		}
		auths[i] = a
		for _, raw := range uploads[i] {
			if _, err := a.AddDescriptor(raw, voteAt); err != nil {
				t.Fatalf("AddDescriptor: %v", err)
			}
		}
		markReachable(a, voteAt)
	}
	var votes [][]byte
	for _, a := range auths {
		v, err := a.MakeVote(va, voteAt)
		if err != nil {
			t.Fatalf("MakeVote: %v", err)
		}
		votes = append(votes, v)
	}
	for _, a := range auths {
		for j, v := range votes {
			if j == a.Self() {
				continue
			}
			if _, err := a.AddVote(v, voteAt); err != nil {
				t.Fatalf("AddVote: %v", err)
			}
		}
	}
	return auths, va
}

// signAll has every authority sign round va and gives every signature to
// every authority.
func signAll(t testing.TB, auths []*Authority, va time.Time) [][]byte {
	t.Helper()
	var sigs [][]byte
	for _, a := range auths {
		s, err := a.SignConsensus(va)
		if err != nil {
			t.Fatalf("SignConsensus: %v", err)
		}
		sigs = append(sigs, s)
	}
	for _, a := range auths {
		for j, s := range sigs {
			if j != a.Self() {
				if _, err := a.AddSignature(s, va); err != nil {
					t.Fatalf("AddSignature: %v", err)
				}
			}
		}
	}
	return sigs
}

// edSign signs body under a signature context.
func edSign(priv []byte, context string, body []byte) []byte {
	return ed25519.Sign(ed25519.PrivateKey(priv), signedMessage(context, body))
}
