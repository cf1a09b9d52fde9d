package directory

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

// testConsensus runs a round of three authorities that all hold relays
// 0-3 and returns the network, the authorities' keys, the round, the
// unsigned body and its digest.
func testConsensus(t *testing.T) (*Network, []*Signer, time.Time, []byte, Digest) {
	t.Helper()
	net, keys := testNetwork(3)
	var uploads [][]byte
	for n := 0; n < 4; n++ {
		d, priv := testDescriptor(t, n)
		uploads = append(uploads, signDescriptor(t, d, priv))
	}
	auths, va := testRound(t, net, keys, [][][]byte{uploads, uploads, uploads})
	d, err := auths[0].ComputeConsensus(va)
	if err != nil {
		t.Fatalf("ComputeConsensus: %v", err)
	}
	return net, keys, va, auths[0].rounds[va.Unix()].body, d
}

// sig signs digest d with key.
func sig(key *Signer, d Digest) ConsensusSignature { return SignDigest(key, d) }

func TestVerifyConsensusSignatureRule(t *testing.T) {
	net, keys, va, body, d := testConsensus(t)
	outsider := testSigner("not an authority")
	now := va.Add(time.Second)
	forged := sig(keys[1], d)
	forged.Sig.Ed[5] ^= 1

	tests := []struct {
		name string
		sigs []ConsensusSignature
		want error
	}{
		{"1 of 3", []ConsensusSignature{sig(keys[0], d)}, ErrNotEnoughSignatures},
		{"2 of 3", []ConsensusSignature{sig(keys[0], d), sig(keys[2], d)}, nil},
		{"3 of 3", []ConsensusSignature{sig(keys[0], d), sig(keys[1], d), sig(keys[2], d)}, nil},
		{"1 of 3 plus an outsider", []ConsensusSignature{sig(keys[0], d), sig(outsider, d)}, ErrNotEnoughSignatures},
		{"one authority twice", []ConsensusSignature{sig(keys[0], d), sig(keys[0], d)}, ErrNotEnoughSignatures},
		{"1 of 3 plus a forged one", []ConsensusSignature{sig(keys[0], d), forged}, ErrNotEnoughSignatures},
		{"signature on another digest", []ConsensusSignature{sig(keys[0], d), sig(keys[1], Digest{1})}, ErrNotEnoughSignatures},
		{"forged then valid from the same authority", []ConsensusSignature{sig(keys[0], d), forged, sig(keys[1], d)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := encodeSigned(body, tc.sigs)
			c, err := VerifyConsensus(doc, net, now)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if len(c.Relays) != 4 {
				t.Errorf("consensus lists %d relays, want 4", len(c.Relays))
			}
		})
	}
}

func TestVerifyConsensusTimesAndNetwork(t *testing.T) {
	net, keys, va, body, d := testConsensus(t)
	doc := encodeSigned(body, []ConsensusSignature{sig(keys[0], d), sig(keys[1], d)})
	vu := testSchedule.ValidUntil(va)
	cases := []struct {
		name string
		now  time.Time
		want error
	}{
		{"at valid-after", va, nil},
		{"at valid-until", vu, nil},
		{"before valid-after", va.Add(-time.Second), ErrNotYetValid},
		{"after valid-until", vu.Add(time.Second), ErrExpired},
	}
	for _, tc := range cases {
		_, err := VerifyConsensus(doc, net, tc.now)
		if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	other := *net
	other.Name = "othernet"
	if _, err := VerifyConsensus(doc, &other, va); !errors.Is(err, ErrWrongNetwork) {
		t.Errorf("other network: got %v", err)
	}
	// A network file with more authorities raises the bar: 2 of 5 fail.
	big, _ := testNetwork(5)
	if _, err := VerifyConsensus(doc, big, va); !errors.Is(err, ErrNotEnoughSignatures) {
		t.Errorf("2 of 5: got %v", err)
	}
}

func TestConsensusTamperRejected(t *testing.T) {
	net, keys, va, body, d := testConsensus(t)
	doc := encodeSigned(body, []ConsensusSignature{sig(keys[0], d), sig(keys[1], d)})
	if _, err := VerifyConsensus(doc, net, va); err != nil {
		t.Fatalf("valid consensus rejected: %v", err)
	}
	// Flip one bit in each byte of the body: none may verify.
	for i := 0; i < len(body); i++ {
		b := bytes.Clone(doc)
		b[i] ^= 0x01
		if _, err := VerifyConsensus(b, net, va); err == nil {
			t.Fatalf("consensus with byte %d flipped accepted", i)
		}
	}
}

func TestConsensusParseRoundTrip(t *testing.T) {
	_, keys, _, body, d := testConsensus(t)
	doc := encodeSigned(body, []ConsensusSignature{sig(keys[0], d), sig(keys[1], d)})
	sc, err := ParseConsensus(doc)
	if err != nil {
		t.Fatalf("ParseConsensus: %v", err)
	}
	if !bytes.Equal(sc.Body, body) || sc.Digest != d || len(sc.Signatures) != 2 {
		t.Fatal("parsed consensus does not match")
	}
	if !bytes.Equal(encodeSigned(sc.encodeBody(), sc.Signatures), doc) {
		t.Error("re-encoding changed the document")
	}
	checkGolden(t, "consensus.txt", doc)
	if _, err := ParseConsensus(body); !errors.Is(err, ErrMalformed) {
		t.Errorf("unsigned consensus: got %v", err)
	}
	if _, err := ParseConsensus(append(bytes.Clone(doc), "relay x\n"...)); err == nil {
		t.Error("consensus with a line after the signatures accepted")
	}
	big := append(bytes.Clone(doc), bytes.Repeat([]byte("a"), MaxConsensusSize)...)
	if _, err := ParseConsensus(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: got %v", err)
	}
}

func TestSignatureDomainSeparation(t *testing.T) {
	// A vote signature must not be usable as a consensus signature, even
	// over the same bytes: the contexts differ.
	_, keys, _, body, d := testConsensus(t)
	k := keys[0].Key.Ed
	voteSig := ed25519.Sign(k, signedMessage(contextVote, d[:]))
	descSig := ed25519.Sign(k, signedMessage(contextDescriptor, d[:]))
	raw := ed25519.Sign(k, d[:])
	for _, s := range [][]byte{voteSig, descSig, raw} {
		cs := ConsensusSignature{Authority: keys[0].Cert.Identity, Cert: keys[0].Cert}
		copy(cs.Sig.Ed[:], s)
		ds := DetachedSignature{Network: "testnet", Digest: d, ConsensusSignature: cs}
		if ds.Verify() {
			t.Error("a signature from another context verified as a consensus signature")
		}
	}
	_ = body
}

func TestDetachedSignatureRoundTrip(t *testing.T) {
	_, keys, va, _, d := testConsensus(t)
	ds := &DetachedSignature{Network: "testnet", ValidAfter: va, Digest: d, ConsensusSignature: sig(keys[2], d)}
	raw := ds.Encode()
	got, err := ParseSignature(raw)
	if err != nil {
		t.Fatalf("ParseSignature: %v", err)
	}
	if !bytes.Equal(got.Encode(), raw) {
		t.Error("round trip changed the document")
	}
	checkGolden(t, "signature.txt", raw)
	for i := range raw {
		b := bytes.Clone(raw)
		b[i] ^= 0x20
		got, err := ParseSignature(b)
		if err != nil {
			continue
		}
		// Only the routing fields are unauthenticated; the signature must
		// still be over the original digest by the original key.
		if got.Digest != d || !got.Authority.Equal(keys[2].Cert.Identity) {
			t.Fatalf("flipping byte %d changed an authenticated field", i)
		}
	}
}
