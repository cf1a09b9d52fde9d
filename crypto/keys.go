package crypto

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
)

// KeySize is the length of X25519 keys and Ed25519 public keys.
const KeySize = 32

// ErrLowOrderPoint is returned when an X25519 computation yields the
// all-zero shared secret (the peer sent a low-order point).
var ErrLowOrderPoint = errors.New("crypto: low-order X25519 point")

// StaticKey is an X25519 key pair kept for a long time: a relay's link key
// or onion key.
type StaticKey struct {
	Private [KeySize]byte
	Public  [KeySize]byte
}

// GenerateStaticKey draws a new X25519 key pair from rand.
func GenerateStaticKey(rand io.Reader) (StaticKey, error) {
	var k StaticKey
	if _, err := io.ReadFull(rand, k.Private[:]); err != nil {
		return StaticKey{}, fmt.Errorf("crypto: reading randomness: %w", err)
	}
	return StaticKeyFromPrivate(k.Private)
}

// StaticKeyFromPrivate derives the public half of an X25519 private key.
func StaticKeyFromPrivate(priv [KeySize]byte) (StaticKey, error) {
	k := StaticKey{Private: priv}
	x25519Base(&k.Public, &k.Private)
	return k, nil
}

// GenerateIdentityKey draws a new Ed25519 identity key from rand.
func GenerateIdentityKey(rand io.Reader) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return nil, fmt.Errorf("crypto: generating identity key: %w", err)
	}
	return priv, nil
}

// X25519 computes the shared secret between priv and pub, refusing
// low-order points. It performs exactly one scalar multiplication.
func X25519(priv, pub []byte) ([]byte, error) {
	if len(priv) != KeySize || len(pub) != KeySize {
		return nil, errors.New("crypto: X25519 key of wrong length")
	}
	var out [KeySize]byte
	x25519(&out, (*[KeySize]byte)(priv), (*[KeySize]byte)(pub))
	if out == ([KeySize]byte{}) {
		return nil, ErrLowOrderPoint
	}
	return out[:], nil
}
