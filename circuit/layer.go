package circuit

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
)

// Layered cell crypto.
//
// Each hop shares two AES-256-GCM keys with the client, one per direction,
// taken from its circuit handshake. Every RELAY cell carries, for each hop
// it passes, one authenticated layer: a 1-byte flag and a 16-byte tag
// (LayerOverhead). The hop at position p (1 = guard) works on the first
// SealedWidth(p) bytes of the payload and leaves the rest as zero padding,
// so the cell stays PayloadSize bytes everywhere:
//
//	forward, as hop p receives it:
//	+----------------------------------------+----------+---------------+
//	| AES-GCM ciphertext of body||flag       | tag 16   | zeros 17(p-1) |
//	+----------------------------------------+----------+---------------+
//	 body is BodySize(p) = 509 - 17p bytes; flag is the last plaintext byte
//
// Forward, hop p opens its layer. Flag FlagForward: the body is the next
// hop's sealed region; the hop zeroes everything after it and passes the
// cell on, so nothing a previous hop wrote outside the authenticated region
// reaches the next hop (no covert channel around an honest hop). Flag
// FlagLocal: the body is a relay message for this hop.
//
// Backward, hop p seals body||flag over the first BodySize(p)+1 bytes: the
// body is either its own relay message (FlagLocal) or the first
// SealedWidth(p+1) bytes of the cell the next hop sent (FlagForward). The
// client peels layers from hop 1 outwards until one says FlagLocal.
//
// Nonces are per-direction counters: a cell modified, replayed, reordered,
// dropped or injected anywhere fails authentication at the next honest hop
// or at the client, which then destroys the circuit (DESIGN.md property 2).

// Layer sizes.
const (
	TagSize       = 16
	LayerOverhead = 1 + TagSize
	// MaxHops bounds circuit length; a relay refuses a handshake claiming
	// a later position.
	MaxHops = 8
)

// Layer flags: the last plaintext byte of each layer.
const (
	FlagForward byte = 0x01
	FlagLocal   byte = 0x02
)

// SealedWidth is the number of payload bytes hop p's layer covers.
func SealedWidth(p int) int { return PayloadSize - LayerOverhead*(p-1) }

// BodySize is the size of a relay message exchanged with hop p.
func BodySize(p int) int { return PayloadSize - LayerOverhead*p }

var (
	// ErrAuth is returned when a layer fails authentication.
	ErrAuth = errors.New("circuit: cell failed authentication")
	// ErrBadFlag is returned for a layer whose flag byte is invalid.
	ErrBadFlag = errors.New("circuit: bad layer flag")
	// ErrNonceExhausted is returned when a direction's counter would wrap.
	ErrNonceExhausted = errors.New("circuit: nonce space exhausted")
)

// layerKey is one direction of one hop: its key, the AEAD expanded from
// it, and its counter. The AEAD (AES key schedule and GHASH table, about
// 770 bytes) is expanded on the first cell and may be dropped while the
// circuit is idle (release); the key bytes stay.
type layerKey struct {
	aead    cipher.AEAD // nil until the first cell, and after release
	key     [32]byte
	counter uint64
	nonce   [12]byte
	tag     [TagSize]byte // tag of the last cell sealed or opened (SENDME proofs)
}

func newLayerKey(key [32]byte) layerKey { return layerKey{key: key} }

// expanded returns the key's AEAD, expanding it if needed.
func (k *layerKey) expanded() (cipher.AEAD, error) {
	if k.aead == nil {
		block, err := aes.NewCipher(k.key[:])
		if err != nil {
			return nil, err
		}
		if k.aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	return k.aead, nil
}

// release drops the expanded AEAD; the next cell expands it again.
func (k *layerKey) release() { k.aead = nil }

func (k *layerKey) next() ([]byte, error) {
	if k.counter == ^uint64(0) {
		return nil, ErrNonceExhausted
	}
	binary.BigEndian.PutUint64(k.nonce[4:], k.counter)
	k.counter++
	return k.nonce[:], nil
}

// seal encrypts payload[:n] in place, writing the tag at payload[n:n+16].
func (k *layerKey) seal(payload *[PayloadSize]byte, n int) error {
	aead, err := k.expanded()
	if err != nil {
		return err
	}
	nonce, err := k.next()
	if err != nil {
		return err
	}
	aead.Seal(payload[:0], nonce, payload[:n], nil)
	copy(k.tag[:], payload[n:n+TagSize])
	return nil
}

// open authenticates and decrypts payload[:n] (ciphertext and tag) in
// place; the plaintext is payload[:n-16].
func (k *layerKey) open(payload *[PayloadSize]byte, n int) error {
	aead, err := k.expanded()
	if err != nil {
		return err
	}
	nonce, err := k.next()
	if err != nil {
		return err
	}
	if _, err := aead.Open(payload[:0], nonce, payload[:n], nil); err != nil {
		return ErrAuth
	}
	copy(k.tag[:], payload[n-TagSize:n])
	return nil
}

// HopKeys are the two layer keys one hop shares with the client.
type HopKeys struct {
	Forward  [32]byte // client to relay
	Backward [32]byte // relay to client
}

// hopLayer is one hop's pair of layer keys and its position.
type hopLayer struct {
	pos      int
	forward  layerKey
	backward layerKey
}

func newHopLayer(keys *HopKeys, pos int) (*hopLayer, error) {
	if pos < 1 || pos > MaxHops {
		return nil, errors.New("circuit: hop position out of range")
	}
	return &hopLayer{pos: pos, forward: newLayerKey(keys.Forward), backward: newLayerKey(keys.Backward)}, nil
}

// openForward removes this hop's forward layer and returns the flag. On
// return the body occupies payload[:BodySize(pos)] and the rest is zero.
func (h *hopLayer) openForward(payload *[PayloadSize]byte) (byte, error) {
	w := SealedWidth(h.pos)
	if err := h.forward.open(payload, w); err != nil {
		return 0, err
	}
	body := BodySize(h.pos)
	flag := payload[body]
	clear(payload[body:])
	if flag != FlagForward && flag != FlagLocal {
		return 0, ErrBadFlag
	}
	return flag, nil
}

// sealBackward adds this hop's backward layer over payload[:BodySize(pos)]
// with the given flag, zeroing the padding after the sealed region.
func (h *hopLayer) sealBackward(payload *[PayloadSize]byte, flag byte) error {
	body := BodySize(h.pos)
	payload[body] = flag
	if err := h.backward.seal(payload, body+1); err != nil {
		return err
	}
	clear(payload[SealedWidth(h.pos):])
	return nil
}

// sealForward is the client's side of openForward.
func (h *hopLayer) sealForward(payload *[PayloadSize]byte, flag byte) error {
	body := BodySize(h.pos)
	payload[body] = flag
	return h.forward.seal(payload, body+1)
}

// openBackward is the client's side of sealBackward.
func (h *hopLayer) openBackward(payload *[PayloadSize]byte) (byte, error) {
	if err := h.backward.open(payload, SealedWidth(h.pos)); err != nil {
		return 0, err
	}
	body := BodySize(h.pos)
	flag := payload[body]
	if flag != FlagForward && flag != FlagLocal {
		return 0, ErrBadFlag
	}
	return flag, nil
}
