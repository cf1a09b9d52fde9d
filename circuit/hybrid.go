package circuit

import (
	"crypto/subtle"
	"fmt"
	"io"

	"github.com/flynn/noise"
	"github.com/veilnet/veil/crypto"
	"golang.org/x/crypto/blake2s"
)

// The hybrid post-quantum circuit handshake (HandshakeHybrid):
// Noise_NKpsk2_25519_ChaChaPoly_BLAKE2s against the relay's X25519 onion
// key, with an ML-KEM-768 ciphertext for the relay's ML-KEM onion key
// inside message 1's encrypted payload and the KEM's shared secret as the
// PSK of message 2. The hop's keys therefore depend on the ephemeral
// X25519 exchange (ee), the relay's X25519 onion key (es) and the ML-KEM
// secret (psk): an adversary must break both X25519 and ML-KEM-768 to read
// the traffic (DESIGN.md property 4), even one who records it today.
//
//	prologue = "veil-circuit-v2" || relay identity (32) || KeyID (8)
//	msg1     = KeyID (8) || e (32) || AEAD_es(position (1) || KEM ciphertext (1088)) (16)
//	         = 1145 bytes: more than a cell, so CREATE and EXTEND fragment it
//	msg2     = e (32) || AEAD(empty) (16) = 48 bytes   (tokens e, ee, psk)
//
// KeyID = BLAKE2s-256(X25519 onion public || ML-KEM public)[:8] names the
// onion key pair the client used, so a relay holding its current and
// previous keys during rotation finds the right one without trial
// decryption, and a handshake against a retired key fails cleanly.

// Hybrid handshake sizes.
const (
	KeyIDSize               = 8
	HybridMsg1Size          = KeyIDSize + 32 + 1 + crypto.KEMCiphertextSize + TagSize
	HybridMsg2Size          = 32 + TagSize
	hybridPrologue          = "veil-circuit-v2"
	hybridPayloadSize       = 1 + crypto.KEMCiphertextSize
	hybridPSKPlacement      = 2
	maxHandshakeMessageSize = 2048
)

// KeyID is the identifier of a hybrid onion key pair.
type KeyID [KeyIDSize]byte

// OnionKeyID computes the KeyID of a hybrid onion public key.
func OnionKeyID(x25519Pub [32]byte, kemPub []byte) KeyID {
	h, _ := blake2s.New256(nil)
	h.Write(x25519Pub[:])
	h.Write(kemPub)
	var id KeyID
	copy(id[:], h.Sum(nil))
	return id
}

func hybridConfig(rand io.Reader, relayID [32]byte, id KeyID) noise.Config {
	prologue := make([]byte, 0, len(hybridPrologue)+32+KeyIDSize)
	prologue = append(append(append(prologue, hybridPrologue...), relayID[:]...), id[:]...)
	return noise.Config{
		CipherSuite:           crypto.CipherSuite,
		Random:                rand,
		Pattern:               noise.HandshakeNK,
		Prologue:              prologue,
		PresharedKeyPlacement: hybridPSKPlacement,
	}
}

// OnionPublic is what a client knows of a relay's onion keys: the X25519
// key and the parsed ML-KEM-768 encapsulation key, with its KeyID.
type OnionPublic struct {
	X25519 [32]byte
	KEM    *crypto.KEMPublicKey
	ID     KeyID
}

// ParseOnionPublic checks a relay's published onion keys.
func ParseOnionPublic(x25519Pub [32]byte, kemPub []byte) (*OnionPublic, error) {
	k, err := crypto.ParseKEMPublicKey(kemPub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	return &OnionPublic{X25519: x25519Pub, KEM: k, ID: OnionKeyID(x25519Pub, kemPub)}, nil
}

// NewHybridClientHandshake starts a hybrid handshake with the relay for
// position pos and returns message 1.
func NewHybridClientHandshake(rand io.Reader, relayID [32]byte, onion *OnionPublic, pos int) (*ClientHandshake, []byte, error) {
	if pos < 1 || pos > MaxHops {
		return nil, nil, fmt.Errorf("%w: position %d", ErrHandshake, pos)
	}
	cfg := hybridConfig(rand, relayID, onion.ID)
	cfg.Initiator = true
	cfg.PeerStatic = onion.X25519[:]
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	var payload [hybridPayloadSize]byte
	payload[0] = byte(pos)
	ss, err := onion.KEM.Encapsulate(rand, payload[1:])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	msg1 := make([]byte, KeyIDSize, HybridMsg1Size)
	copy(msg1, onion.ID[:])
	msg1, _, _, err = hs.WriteMessage(msg1, payload[:])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	if err := hs.SetPresharedKey(ss[:]); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	return &ClientHandshake{hs: hs, pos: pos, msg2Size: HybridMsg2Size}, msg1, nil
}

// RespondHybridHandshake is the relay's half: it finds the onion key named
// by message 1's KeyID among keys (current first, then previous),
// decapsulates the KEM ciphertext, and returns message 2, the layer keys
// and the position the client assigned.
func RespondHybridHandshake(rand io.Reader, relayID [32]byte, keys []*crypto.OnionKey, msg1 []byte) (msg2 []byte, hk *HopKeys, pos int, err error) {
	if len(msg1) != HybridMsg1Size {
		return nil, nil, 0, fmt.Errorf("%w: message 1 has %d bytes", ErrHandshake, len(msg1))
	}
	defer recoverAs(&err)
	var key *crypto.OnionKey
	var id KeyID
	for _, k := range keys {
		kid := OnionKeyID(k.X25519.Public, k.KEMPublic[:])
		if subtle.ConstantTimeCompare(kid[:], msg1[:KeyIDSize]) == 1 {
			key, id = k, kid
			break
		}
	}
	if key == nil {
		return nil, nil, 0, ErrUnknownOnionKey
	}
	cfg := hybridConfig(rand, relayID, id)
	cfg.StaticKeypair = key.X25519.NoiseKey()
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, nil, 0, ErrHandshake
	}
	payload, _, _, err := hs.ReadMessage(make([]byte, 0, hybridPayloadSize), msg1[KeyIDSize:])
	if err != nil || len(payload) != hybridPayloadSize {
		return nil, nil, 0, ErrHandshake
	}
	pos = int(payload[0])
	if pos < 1 || pos > MaxHops {
		return nil, nil, 0, fmt.Errorf("%w: position %d", ErrHandshake, pos)
	}
	ss, err := key.Decapsulate(payload[1:])
	if err != nil {
		return nil, nil, 0, ErrHandshake
	}
	if err := hs.SetPresharedKey(ss[:]); err != nil {
		return nil, nil, 0, ErrHandshake
	}
	msg2, hk, err = finishResponder(hs, HybridMsg2Size)
	return msg2, hk, pos, err
}
