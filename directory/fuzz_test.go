package directory

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"net/netip"
	"testing"
	"time"
)

// fuzzDocs returns valid documents of every kind for seeding.
func fuzzDocs(f *testing.F) (desc, vote, consensus, sigDoc, network []byte) {
	net, keys := testNetwork(3)
	var raws [][]byte
	for n := 0; n < 2; n++ {
		d, priv := testDescriptor(f, n)
		raws = append(raws, signDescriptor(f, d, priv))
	}
	auths, va := testRound(f, net, keys, [][][]byte{raws, raws, raws})
	sigs := signAll(f, auths, va)
	cons, _, err := auths[0].Assemble(va)
	if err != nil {
		f.Fatal(err)
	}
	return raws[0], auths[0].Vote(va, 0), cons, sigs[1], net.Encode()
}

// FuzzParseDescriptor: ParseDescriptor never panics, and whatever it
// accepts is canonical: re-encoding the parsed descriptor and appending
// the original signature line gives back the input byte for byte, and
// the signature verifies under the identity it carries.
func FuzzParseDescriptor(f *testing.F) {
	desc, _, _, _, _ := fuzzDocs(f)
	f.Add(desc)
	f.Add([]byte("veil-descriptor 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDescriptor(b, testTime)
		if err != nil {
			return
		}
		i := bytes.LastIndex(b, []byte("\nsignature ")) + 1
		if !bytes.Equal(d.encodeBody(), b[:i]) {
			t.Fatal("accepted a non-canonical descriptor")
		}
		var sig [64]byte
		if decodeFixed(sig[:], string(b[i+len("signature "):len(b)-1])) != nil ||
			!ed25519.Verify(d.Identity, signedMessage(contextDescriptor, b[:i]), sig[:]) {
			t.Fatal("accepted a descriptor whose signature does not verify")
		}
	})
}

// FuzzParseConsensus: ParseConsensus never panics; what it accepts
// re-encodes to the input byte for byte, and Digest is SHA-256 of Body.
func FuzzParseConsensus(f *testing.F) {
	_, _, cons, _, _ := fuzzDocs(f)
	f.Add(cons)
	f.Fuzz(func(t *testing.T, b []byte) {
		sc, err := ParseConsensus(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeSigned(sc.encodeBody(), sc.Signatures), b) {
			t.Fatal("accepted a non-canonical consensus")
		}
		if sc.Digest != sha256.Sum256(sc.Body) {
			t.Fatal("digest does not match body")
		}
		if len(sc.Relays) > MaxRelays || len(sc.Signatures) > MaxConsensusSignatures {
			t.Fatal("limits exceeded")
		}
	})
}

// FuzzVerifyConsensus: VerifyConsensus never panics, and it accepts a
// document only if, counted independently, more than half of the
// network's authorities have a valid signature on SHA-256 of the body and
// the time is within the validity window.
func FuzzVerifyConsensus(f *testing.F) {
	_, _, cons, _, _ := fuzzDocs(f)
	net, _ := testNetwork(3)
	va := testSchedule.NextRound(testTime)
	f.Add(cons, int64(0))
	f.Add(cons, int64(100))
	f.Fuzz(func(t *testing.T, b []byte, offset int64) {
		now := va.Add(time.Duration(offset) * time.Second)
		c, err := VerifyConsensus(b, net, now)
		if err != nil {
			return
		}
		sc, err := ParseConsensus(b)
		if err != nil {
			t.Fatal("verified a document that does not parse")
		}
		msg := signedMessage(contextConsensus, sc.Digest[:])
		valid := map[string]bool{}
		for _, s := range sc.Signatures {
			i := net.Index(s.Cert.Identity)
			if i < 0 || !ed25519.Verify(s.Cert.Identity, signedMessage(contextCert, s.Cert.encodeBody()), s.Cert.Sig.Ed[:]) ||
				now.After(s.Cert.Expires) {
				continue
			}
			if ed25519.Verify(s.Cert.SigningKey, msg, s.Sig.Ed[:]) {
				valid[string(s.Authority)] = true
			}
		}
		if 2*len(valid) <= len(net.Authorities) {
			t.Fatalf("accepted with %d valid signatures", len(valid))
		}
		if now.Before(c.ValidAfter) || now.After(c.ValidUntil) {
			t.Fatal("accepted outside the validity window")
		}
	})
}

// FuzzParseVote: ParseVote never panics; what it accepts re-encodes to
// the input (body plus signature line), its signature verifies under the
// key it names, and each entry's digest is SHA-256 of its raw descriptor.
func FuzzParseVote(f *testing.F) {
	_, vote, _, _, _ := fuzzDocs(f)
	f.Add(vote)
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseVote(b)
		if err != nil {
			return
		}
		body := v.encodeBody()
		if !bytes.HasPrefix(b, body) {
			t.Fatal("accepted a non-canonical vote")
		}
		var sig [64]byte
		rest := b[len(body):]
		if !bytes.HasPrefix(rest, []byte("signature ")) || decodeFixed(sig[:], string(rest[10:10+88])) != nil ||
			!ed25519.Verify(v.Cert.SigningKey, signedMessage(contextVote, body), sig[:]) {
			t.Fatal("accepted a vote whose signature does not verify")
		}
		for _, e := range v.Entries {
			if e.Digest != sha256.Sum256(e.Raw) {
				t.Fatal("entry digest mismatch")
			}
		}
	})
}

// FuzzParseSignature: ParseSignature never panics; what it accepts
// re-encodes to the input and verifies.
func FuzzParseSignature(f *testing.F) {
	_, _, _, sigDoc, _ := fuzzDocs(f)
	f.Add(sigDoc)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSignature(b)
		if err != nil {
			return
		}
		if !bytes.Equal(s.Encode(), b) || !s.Verify() {
			t.Fatal("accepted a non-canonical or unverifiable signature document")
		}
	})
}

// FuzzParseNetwork: ParseNetwork never panics; what it accepts passes
// Validate, and its Encode parses back to the same network and the same
// encoding.
func FuzzParseNetwork(f *testing.F) {
	_, _, _, _, network := fuzzDocs(f)
	f.Add(network)
	f.Add([]byte("name = \"x\"\n[[authority]]\nname = \"a\"\naddress = \"[::1]:1\"\nidentity = \"\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseNetwork(b)
		if err != nil {
			return
		}
		if n.Validate() != nil {
			t.Fatal("accepted an invalid network")
		}
		enc := n.Encode()
		back, err := ParseNetwork(enc)
		if err != nil {
			t.Fatalf("Encode output does not parse: %v\n%s", err, enc)
		}
		if !bytes.Equal(back.Encode(), enc) || back.Name != n.Name || len(back.Authorities) != len(n.Authorities) {
			t.Fatal("network did not round-trip")
		}
	})
}

// FuzzParseExitPolicy: ParseExitPolicy never panics; what it accepts has
// at most MaxPolicyRules rules, String() parses back to an equal policy,
// and AllowsPort is sound: whenever some address is allowed on a port,
// AllowsPort says so.
func FuzzParseExitPolicy(f *testing.F) {
	for _, s := range []string{
		"accept *:80, reject *:*", "reject private:*, accept *:*", "accept [::]/0:443",
		"accept 10.0.0.0/8:1-1024\nreject *4:*", "reject *6:80, accept *:80",
	} {
		f.Add(s, uint16(80))
	}
	probes := []netip.Addr{
		netip.MustParseAddr("1.2.3.4"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::1"), netip.MustParseAddr("::ffff:10.0.0.1"),
	}
	f.Fuzz(func(t *testing.T, s string, port uint16) {
		p, err := ParseExitPolicy(s)
		if err != nil {
			return
		}
		if len(p.rules) > MaxPolicyRules {
			t.Fatal("too many rules")
		}
		back, err := ParseExitPolicy(p.String())
		if err != nil || !back.Equal(p) {
			t.Fatalf("String() = %q did not round-trip: %v", p.String(), err)
		}
		for _, a := range probes {
			if p.Allows(a, port) && !p.AllowsPort(port) {
				t.Fatalf("Allows(%v, %d) but not AllowsPort(%d)", a, port, port)
			}
		}
		if p.AllowsPort(port) && !p.IsExit() {
			t.Fatal("AllowsPort true but IsExit false")
		}
	})
}

// FuzzParseCert: ParseCert never panics; what it accepts re-encodes to
// the input (body plus signature lines) and its Ed25519 signature
// verifies under the identity it names; Check against a network listing
// that identity never panics.
func FuzzParseCert(f *testing.F) {
	net, keys := testNetwork(1)
	f.Add(keys[0].Cert.Raw)
	id, _ := KeyPairFromSeeds(testKey("pq id").Seed(), bytes.Repeat([]byte{1}, PQSeedSize))
	sk, _ := KeyPairFromSeeds(testKey("pq sk").Seed(), bytes.Repeat([]byte{2}, PQSeedSize))
	if c, err := IssueCert(id, sk, testTime, testTime.Add(time.Hour)); err == nil {
		f.Add(c.Raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCert(b)
		if err != nil {
			return
		}
		w := &writer{}
		w.Write(c.encodeBody())
		writeSig(w, &c.Sig)
		if !bytes.Equal(w.Bytes(), b) {
			t.Fatal("accepted a non-canonical certificate")
		}
		if !ed25519.Verify(c.Identity, signedMessage(contextCert, c.encodeBody()), c.Sig.Ed[:]) {
			t.Fatal("accepted a certificate whose signature does not verify")
		}
		_, _ = c.Check(net, testTime)
	})
}
