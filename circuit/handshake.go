package circuit

import (
	"errors"
	"fmt"
	"io"

	"github.com/flynn/noise"
	"github.com/veilnet/veil/crypto"
)

// The circuit handshake: Noise_NK_25519_ChaChaPoly_BLAKE2s against the
// relay's onion key (from its signed descriptor), with the prologue
//
//	"veil-circuit-v1" || relay identity key (32 bytes)
//
// so a handshake completes only with the relay the client meant (DESIGN.md
// property 5). Message 1 carries, encrypted, the hop's position in the
// circuit; message 2 carries nothing. The two transport keys become the
// hop's forward and backward layer keys (forward secrecy from the
// ephemeral-ephemeral DH, property 3).
//
//	msg1 = e (32) || AEAD(position (1)) (17)   = 49 bytes
//	msg2 = e (32) || AEAD(empty) (16)          = 48 bytes

// HandshakeType identifies the handshake in CREATE cells and EXTEND
// messages.
type HandshakeType uint16

// Handshake types.
const (
	// HandshakeNK is the classical handshake: X25519 only. Relays accept it;
	// veil clients use HandshakeHybrid.
	HandshakeNK HandshakeType = 1
	// HandshakeHybrid is X25519 + ML-KEM-768 (hybrid.go).
	HandshakeHybrid HandshakeType = 2
)

// Handshake message sizes.
const (
	HandshakeMsg1Size = 32 + 1 + TagSize
	HandshakeMsg2Size = 32 + TagSize
)

const circuitPrologue = "veil-circuit-v1"

var (
	// ErrHandshake is returned when a circuit handshake fails.
	ErrHandshake = errors.New("circuit: handshake failed")
	// ErrUnknownOnionKey is returned for a hybrid handshake naming an onion
	// key the relay does not hold (stale, or never its own).
	ErrUnknownOnionKey = fmt.Errorf("%w: unknown onion key", ErrHandshake)
)

func circuitNoiseConfig(rand io.Reader, relayID [32]byte) noise.Config {
	prologue := make([]byte, 0, len(circuitPrologue)+32)
	prologue = append(append(prologue, circuitPrologue...), relayID[:]...)
	return noise.Config{
		CipherSuite: crypto.CipherSuite,
		Random:      rand,
		Pattern:     noise.HandshakeNK,
		Prologue:    prologue,
	}
}

// ClientHandshake is the client's half of one hop's handshake.
type ClientHandshake struct {
	hs       *noise.HandshakeState
	pos      int
	msg2Size int
}

// NewClientHandshake starts a handshake with the relay whose identity and
// onion key the consensus lists, for position pos in the circuit, and
// returns message 1.
func NewClientHandshake(rand io.Reader, relayID, onionKey [32]byte, pos int) (*ClientHandshake, []byte, error) {
	if pos < 1 || pos > MaxHops {
		return nil, nil, fmt.Errorf("%w: position %d", ErrHandshake, pos)
	}
	cfg := circuitNoiseConfig(rand, relayID)
	cfg.Initiator = true
	cfg.PeerStatic = onionKey[:]
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	msg1, _, _, err := hs.WriteMessage(make([]byte, 0, HandshakeMsg1Size), []byte{byte(pos)})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	return &ClientHandshake{hs: hs, pos: pos, msg2Size: HandshakeMsg2Size}, msg1, nil
}

// Finish reads message 2 and returns the hop's layer keys.
func (h *ClientHandshake) Finish(msg2 []byte) (keys *HopKeys, err error) {
	if len(msg2) != h.msg2Size {
		return nil, fmt.Errorf("%w: message 2 has %d bytes", ErrHandshake, len(msg2))
	}
	defer recoverAs(&err)
	payload, cs1, cs2, err := h.hs.ReadMessage(nil, msg2)
	if err != nil || len(payload) != 0 {
		return nil, ErrHandshake
	}
	f, b, err := crypto.SplitKeys(cs1, cs2)
	if err != nil {
		return nil, ErrHandshake
	}
	return &HopKeys{Forward: f, Backward: b}, nil
}

// RespondHandshake is the relay's half: it reads message 1 with the relay's
// onion key and returns message 2, the layer keys and the position the
// client assigned. A relay with a current and a previous onion key calls it
// once per key.
func RespondHandshake(rand io.Reader, relayID [32]byte, onion *crypto.StaticKey, msg1 []byte) (msg2 []byte, keys *HopKeys, pos int, err error) {
	if len(msg1) != HandshakeMsg1Size {
		return nil, nil, 0, fmt.Errorf("%w: message 1 has %d bytes", ErrHandshake, len(msg1))
	}
	defer recoverAs(&err)
	cfg := circuitNoiseConfig(rand, relayID)
	cfg.StaticKeypair = onion.NoiseKey()
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, nil, 0, ErrHandshake
	}
	payload, _, _, err := hs.ReadMessage(nil, msg1)
	if err != nil || len(payload) != 1 {
		return nil, nil, 0, ErrHandshake
	}
	pos = int(payload[0])
	if pos < 1 || pos > MaxHops {
		return nil, nil, 0, fmt.Errorf("%w: position %d", ErrHandshake, pos)
	}
	msg2, keys, err = finishResponder(hs, HandshakeMsg2Size)
	return msg2, keys, pos, err
}

// finishResponder writes the responder's message 2 (of size bytes), which
// completes an NK-shaped handshake, and returns it with the hop's layer
// keys: the first split key protects client-to-relay traffic.
func finishResponder(hs *noise.HandshakeState, size int) ([]byte, *HopKeys, error) {
	msg2, cs1, cs2, err := hs.WriteMessage(make([]byte, 0, size), nil)
	if err != nil {
		return nil, nil, ErrHandshake
	}
	f, b, err := crypto.SplitKeys(cs1, cs2)
	if err != nil {
		return nil, nil, ErrHandshake
	}
	return msg2, &HopKeys{Forward: f, Backward: b}, nil
}

// recoverAs turns a panic inside a third-party handshake library into
// ErrHandshake: bytes from the network must never crash a node.
func recoverAs(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: recovered: %v", ErrHandshake, r)
	}
}

func noiseHandshake(cfg noise.Config) (*noise.HandshakeState, error) {
	return noise.NewHandshakeState(cfg)
}
