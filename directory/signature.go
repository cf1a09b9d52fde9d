package directory

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"time"
)

// DetachedSignature is one authority's signature on a consensus digest,
// sent to the other authorities before the consensus is assembled
// (docs/spec/directory.md, "Detached signature").
//
// Only Signature is authenticated: it covers the digest, and the digest
// covers the whole consensus body, network and valid-after included. The
// Network and ValidAfter fields only route the signature to a round.
type DetachedSignature struct {
	Network    string
	ValidAfter time.Time
	Digest     Digest
	ConsensusSignature
}

// SignDigest signs a consensus digest with priv.
func SignDigest(priv ed25519.PrivateKey, d Digest) [ed25519.SignatureSize]byte {
	var s [ed25519.SignatureSize]byte
	copy(s[:], ed25519.Sign(priv, signatureMessage(d)))
	return s
}

// Verify reports whether the signature is valid for the digest under the
// key it names. It does not say whether that key is trusted.
func (s *DetachedSignature) Verify() bool {
	return len(s.Authority) == ed25519.PublicKeySize &&
		ed25519.Verify(s.Authority, signatureMessage(s.Digest), s.Signature[:])
}

// Encode returns the canonical document.
func (s *DetachedSignature) Encode() []byte {
	w := &writer{}
	w.line("veil-consensus-signature", "1")
	w.line("network", s.Network)
	w.line("valid-after", formatTime(s.ValidAfter))
	w.line("digest", s.Digest.String())
	w.line("authority", b64.EncodeToString(s.Authority))
	w.line("signature", b64.EncodeToString(s.Signature[:]))
	return w.Bytes()
}

// ParseSignature parses a detached signature document and verifies the
// signature against the key it names. Whether that key belongs to a
// trusted authority is the caller's check.
func ParseSignature(b []byte) (*DetachedSignature, error) {
	r, err := newLineReader(b, MaxSignatureSize)
	if err != nil {
		return nil, err
	}
	s := &DetachedSignature{}
	l, err := r.expect("veil-consensus-signature", 1)
	if err != nil {
		return nil, err
	}
	if l.args[0] != "1" {
		return nil, errAt(ErrMalformed, l, "unsupported version")
	}
	if l, err = r.expect("network", 1); err != nil {
		return nil, err
	}
	s.Network = l.args[0]
	if !validName(s.Network) {
		return nil, errAt(ErrInvalidField, l, "bad network name")
	}
	if l, err = r.expect("valid-after", 1); err != nil {
		return nil, err
	}
	if s.ValidAfter, err = parseTime(l.args[0]); err != nil {
		return nil, errAt(err, l, "bad time")
	}
	if l, err = r.expect("digest", 1); err != nil {
		return nil, err
	}
	if err := decodeFixed(s.Digest[:], l.args[0]); err != nil {
		return nil, errAt(err, l, "bad digest")
	}
	if l, err = r.expect("authority", 1); err != nil {
		return nil, err
	}
	s.Authority = make(ed25519.PublicKey, ed25519.PublicKeySize)
	if err := decodeFixed(s.Authority, l.args[0]); err != nil {
		return nil, errAt(err, l, "bad key")
	}
	if l, err = r.expect("signature", 1); err != nil {
		return nil, err
	}
	if err := decodeFixed(s.Signature[:], l.args[0]); err != nil {
		return nil, errAt(err, l, "bad signature encoding")
	}
	if err := r.expectEnd(); err != nil {
		return nil, err
	}
	if !bytes.Equal(s.Encode(), b) {
		return nil, ErrNonCanonical
	}
	if !s.Verify() {
		return nil, fmt.Errorf("%w: detached consensus signature", ErrBadSignature)
	}
	return s, nil
}
