package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"testing"
)

// TestX25519MatchesStdlib: our ladder and fixed-base multiplication agree
// with crypto/ecdh on random keys, and the RFC 7748 §6.1 vectors hold.
func TestX25519MatchesStdlib(t *testing.T) {
	for range 200 {
		a, _ := ecdh.X25519().GenerateKey(rand.Reader)
		b, _ := ecdh.X25519().GenerateKey(rand.Reader)
		var priv, pub, got [32]byte
		copy(priv[:], a.Bytes())
		x25519Base(&got, &priv)
		if !bytes.Equal(got[:], a.PublicKey().Bytes()) {
			t.Fatal("fixed-base public key differs from crypto/ecdh")
		}
		copy(pub[:], b.PublicKey().Bytes())
		x25519(&got, &priv, &pub)
		want, _ := a.ECDH(b.PublicKey())
		if !bytes.Equal(got[:], want) {
			t.Fatal("ladder differs from crypto/ecdh")
		}
	}
	h := func(s string) []byte { b, _ := hex.DecodeString(s); return b }
	alicePriv := h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	alicePub := h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	bobPub := h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
	shared := h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
	k, _ := StaticKeyFromPrivate([32]byte(alicePriv))
	if !bytes.Equal(k.Public[:], alicePub) {
		t.Fatal("RFC 7748 public key vector")
	}
	s, err := X25519(alicePriv, bobPub)
	if err != nil || !bytes.Equal(s, shared) {
		t.Fatalf("RFC 7748 shared secret vector: %x %v", s, err)
	}
}

func BenchmarkX25519DH(b *testing.B) {
	k, _ := GenerateStaticKey(rand.Reader)
	p, _ := GenerateStaticKey(rand.Reader)
	for b.Loop() {
		X25519(k.Private[:], p.Public[:])
	}
}

func BenchmarkX25519Keygen(b *testing.B) {
	for b.Loop() {
		GenerateStaticKey(rand.Reader)
	}
}
