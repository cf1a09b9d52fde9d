package directory

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestCertRoundTripAndCheck(t *testing.T) {
	net, keys := testNetwork(2)
	c := keys[1].Cert
	checkGolden(t, "cert.txt", c.Raw)
	got, err := ParseCert(c.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Raw, c.Raw) || !got.SigningKey.Equal(c.SigningKey) {
		t.Fatal("round trip changed the certificate")
	}
	if i, err := got.Check(net, testTime); err != nil || i != 1 {
		t.Fatalf("Check: %d %v", i, err)
	}
	if _, err := got.Check(net, c.Expires.Add(time.Second)); !errors.Is(err, ErrCertExpired) {
		t.Errorf("after expiry: %v", err)
	}
	if _, err := got.Check(net, c.Published.Add(-2*time.Hour)); !errors.Is(err, ErrCertNotYetValid) {
		t.Errorf("before published: %v", err)
	}
	other, _ := testNetwork(1)
	other.Authorities[0].Identity = testSigner("x").Cert.Identity
	if _, err := got.Check(other, testTime); !errors.Is(err, ErrUnknownAuthority) {
		t.Errorf("unknown identity: %v", err)
	}
	for i := range c.Raw {
		b := bytes.Clone(c.Raw)
		b[i] ^= 1
		if _, err := ParseCert(b); err == nil {
			t.Fatalf("flipping a bit of byte %d was accepted", i)
		}
	}
}

func TestHybridCert(t *testing.T) {
	id, _ := KeyPairFromSeeds(testKey("h id").Seed(), bytes.Repeat([]byte{1}, PQSeedSize))
	sk, _ := KeyPairFromSeeds(testKey("h sk").Seed(), bytes.Repeat([]byte{2}, PQSeedSize))
	c, err := IssueCert(id, sk, testTime, testTime.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	net := &Network{Name: "n", RequirePQ: true, Authorities: []AuthorityInfo{{Name: "a", Address: "h:1", Identity: id.Public(), IdentityPQ: id.PublicPQ()}}}
	if err := net.Validate(); err != nil {
		t.Fatal(err)
	}
	back, err := ParseNetwork(net.Encode())
	if err != nil || !back.RequirePQ || !bytes.Equal(back.Authorities[0].IdentityPQ, id.PublicPQ()) {
		t.Fatalf("hybrid network file round trip: %v", err)
	}
	pc, err := ParseCert(c.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Check(net, testTime); err != nil {
		t.Fatalf("hybrid Check: %v", err)
	}
	// A wrong ML-DSA identity key in the network file: refused.
	wrong, _ := KeyPairFromSeeds(testKey("w").Seed(), bytes.Repeat([]byte{3}, PQSeedSize))
	net.Authorities[0].IdentityPQ = wrong.PublicPQ()
	if _, err := pc.Check(net, testTime); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong PQ identity: %v", err)
	}
	// A classical certificate for an identity the network lists as hybrid.
	classic, _ := IssueCert(&KeyPair{Ed: id.Ed}, &KeyPair{Ed: sk.Ed}, testTime, testTime.Add(time.Hour))
	net.Authorities[0].IdentityPQ = id.PublicPQ()
	if _, err := classic.Check(net, testTime); !errors.Is(err, ErrBadSignature) {
		t.Errorf("classical certificate on a hybrid network: %v", err)
	}
	// A hybrid network file without an ML-DSA identity is invalid.
	net.Authorities[0].IdentityPQ = nil
	if net.Validate() == nil {
		t.Error("hybrid network without identity-pq validated")
	}
}
