package crypto

import (
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
)

// Hybrid onion keys: what a relay publishes for the circuit handshake. The
// X25519 half is the Noise static key; the ML-KEM-768 half encapsulates the
// secret that becomes the handshake's PSK, so a hop's keys stay secret if
// either X25519 or ML-KEM-768 holds (DESIGN.md property 4).

// ML-KEM-768 sizes.
const (
	KEMPublicKeySize  = mlkem768.PublicKeySize  // 1184
	KEMCiphertextSize = mlkem768.CiphertextSize // 1088
	KEMSharedKeySize  = mlkem768.SharedKeySize  // 32
	KEMSeedSize       = mlkem768.KeySeedSize    // 64
	// OnionKeyFileSize is the key material of an onion key file.
	OnionKeyFileSize = KeySize + KEMSeedSize
)

// ErrKEM is returned for malformed ML-KEM keys or ciphertexts.
var ErrKEM = errors.New("crypto: bad ML-KEM input")

// OnionKey is a relay's hybrid onion key pair.
type OnionKey struct {
	X25519    StaticKey
	KEMSeed   [KEMSeedSize]byte
	KEMPublic [KEMPublicKeySize]byte
	kem       *mlkem768.PrivateKey
}

// GenerateOnionKey draws a new hybrid onion key from rand.
func GenerateOnionKey(rand io.Reader) (*OnionKey, error) {
	var raw [OnionKeyFileSize]byte
	if _, err := io.ReadFull(rand, raw[:]); err != nil {
		return nil, fmt.Errorf("crypto: reading randomness: %w", err)
	}
	return onionKeyFromBytes(raw[:])
}

func onionKeyFromBytes(raw []byte) (*OnionKey, error) {
	if len(raw) != OnionKeyFileSize {
		return nil, ErrKEM
	}
	x, err := StaticKeyFromPrivate([KeySize]byte(raw[:KeySize]))
	if err != nil {
		return nil, err
	}
	k := &OnionKey{X25519: x}
	copy(k.KEMSeed[:], raw[KeySize:])
	pub, priv := mlkem768.NewKeyFromSeed(k.KEMSeed[:])
	pub.Pack(k.KEMPublic[:])
	k.kem = priv
	return k, nil
}

// Decapsulate recovers the shared secret of an ML-KEM-768 ciphertext.
// ML-KEM decapsulation never fails on a well-sized ciphertext (implicit
// rejection): a forged one yields a secret the sender does not know, and
// the handshake then fails authentication.
func (k *OnionKey) Decapsulate(ct []byte) ([KEMSharedKeySize]byte, error) {
	var ss [KEMSharedKeySize]byte
	if len(ct) != KEMCiphertextSize {
		return ss, ErrKEM
	}
	k.kem.DecapsulateTo(ss[:], ct)
	return ss, nil
}

// KEMPublicKey is a parsed ML-KEM-768 encapsulation key.
type KEMPublicKey struct{ pk mlkem768.PublicKey }

// ParseKEMPublicKey checks and parses a 1184-byte encapsulation key.
func ParseKEMPublicKey(b []byte) (*KEMPublicKey, error) {
	var k KEMPublicKey
	if len(b) != KEMPublicKeySize {
		return nil, ErrKEM
	}
	if err := k.pk.Unpack(b); err != nil {
		return nil, ErrKEM
	}
	return &k, nil
}

// Encapsulate draws a shared secret for the key's holder, writing the
// ciphertext into ct (KEMCiphertextSize bytes).
func (k *KEMPublicKey) Encapsulate(rand io.Reader, ct []byte) ([KEMSharedKeySize]byte, error) {
	var ss [KEMSharedKeySize]byte
	var seed [mlkem768.EncapsulationSeedSize]byte
	if len(ct) != KEMCiphertextSize {
		return ss, ErrKEM
	}
	if _, err := io.ReadFull(rand, seed[:]); err != nil {
		return ss, fmt.Errorf("crypto: reading randomness: %w", err)
	}
	k.pk.EncapsulateTo(ct, ss[:], seed[:])
	return ss, nil
}

// LoadOrCreateOnionKey reads the onion key at path, or creates one.
func LoadOrCreateOnionKey(path string, rand io.Reader) (*OnionKey, error) {
	raw, err := ReadKeyFile(path, KindOnion)
	if err == nil {
		return onionKeyFromBytes(raw)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	k, err := GenerateOnionKey(rand)
	if err != nil {
		return nil, err
	}
	if err := WriteOnionKey(path, k); err != nil {
		return nil, err
	}
	return k, nil
}

// WriteOnionKey stores k at path (0600, refusing to overwrite).
func WriteOnionKey(path string, k *OnionKey) error {
	raw := make([]byte, 0, OnionKeyFileSize)
	raw = append(append(raw, k.X25519.Private[:]...), k.KEMSeed[:]...)
	return WriteKeyFile(path, KindOnion, raw)
}
