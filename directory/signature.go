package directory

import (
	"bytes"
	"fmt"
	"time"
)

// DetachedSignature is one authority's signature on a consensus digest,
// sent to the other authorities before the consensus is assembled
// (docs/spec/directory.md, "Detached signature").
//
// Only the signature is authenticated: it covers the digest, and the
// digest covers the whole consensus body, network and valid-after
// included. The Network and ValidAfter fields only route it to a round.
type DetachedSignature struct {
	Network    string
	ValidAfter time.Time
	Digest     Digest
	ConsensusSignature
}

// SignDigest signs a consensus digest with s.
func SignDigest(s *Signer, d Digest) ConsensusSignature {
	return ConsensusSignature{Authority: s.Cert.Identity, Cert: s.Cert, Sig: s.Key.sign(contextConsensus, d[:])}
}

// Verify reports whether the signature is valid for the digest under the
// signing key(s) its certificate names. It does not say whether the
// certificate is trusted (Cert.Check).
func (s *DetachedSignature) Verify() bool {
	return s.Cert != nil && s.Cert.verify(contextConsensus, s.Digest[:], &s.Sig)
}

// Encode returns the canonical document.
func (s *DetachedSignature) Encode() []byte {
	w := &writer{}
	w.line("veil-consensus-signature", "1")
	w.line("network", s.Network)
	w.line("valid-after", formatTime(s.ValidAfter))
	w.line("digest", s.Digest.String())
	w.line("cert", b64.EncodeToString(s.Cert.Raw))
	writeSig(w, &s.Sig)
	return w.Bytes()
}

// ParseSignature parses a detached signature document and verifies the
// signature against its certificate's signing key(s). Whether the
// certificate belongs to a trusted authority and is valid now is the
// caller's check (Cert.Check).
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
	if l, err = r.expect("cert", 1); err != nil {
		return nil, err
	}
	raw, err := decodeVar(l.args[0], MaxCertSize)
	if err != nil {
		return nil, errAt(err, l, "bad certificate encoding")
	}
	if s.Cert, err = ParseCert(raw); err != nil {
		return nil, err
	}
	s.Authority = s.Cert.Identity
	if s.Sig, _, err = readSig(r); err != nil {
		return nil, err
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
