package directory

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"time"
)

// Vote is one authority's signed view of the network for one round
// (docs/spec/directory.md, "Vote"): the descriptors it holds, each still
// signed by its relay.
type Vote struct {
	Network    string
	Authority  ed25519.PublicKey
	Published  time.Time // when the vote was made; not after ValidAfter
	ValidAfter time.Time // the round the vote is for
	FreshUntil time.Time
	ValidUntil time.Time
	Entries    []VoteEntry // sorted by relay ID, IDs distinct
}

// VoteEntry is one relay in a vote.
type VoteEntry struct {
	Raw        []byte // the signed descriptor as the relay uploaded it
	Descriptor *Descriptor
	Digest     Digest // DescriptorDigest(Raw)
}

// validate checks the vote's times and entries (not signatures).
func (v *Vote) validate() error {
	if !validName(v.Network) || len(v.Authority) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: vote header", ErrInvalidField)
	}
	if v.Published.After(v.ValidAfter) || !v.FreshUntil.After(v.ValidAfter) ||
		v.ValidUntil.Before(v.FreshUntil) || v.ValidUntil.Sub(v.ValidAfter) > MaxConsensusLifetime {
		return fmt.Errorf("%w: vote times", ErrInvalidField)
	}
	if len(v.Entries) > MaxRelays {
		return ErrTooManyRelays
	}
	for i := range v.Entries {
		if i > 0 {
			prev, cur := v.Entries[i-1].Descriptor.ID(), v.Entries[i].Descriptor.ID()
			if bytes.Compare(prev[:], cur[:]) >= 0 {
				return fmt.Errorf("%w: vote entries not sorted by relay ID or repeated", ErrInvalidField)
			}
		}
		if err := v.Entries[i].Descriptor.checkTime(v.Published); err != nil {
			return err
		}
	}
	return nil
}

// encodeBody writes every line of the vote except the signature.
func (v *Vote) encodeBody() []byte {
	w := &writer{}
	w.line("veil-vote", "1")
	w.line("network", v.Network)
	w.line("authority", b64.EncodeToString(v.Authority))
	w.line("published", formatTime(v.Published))
	w.line("valid-after", formatTime(v.ValidAfter))
	w.line("fresh-until", formatTime(v.FreshUntil))
	w.line("valid-until", formatTime(v.ValidUntil))
	for _, e := range v.Entries {
		w.line("descriptor", b64.EncodeToString(e.Raw))
	}
	return w.Bytes()
}

// Sign encodes v and signs it with priv, whose public key must be
// v.Authority.
func (v *Vote) Sign(priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize || !v.Authority.Equal(priv.Public()) {
		return nil, fmt.Errorf("%w: private key does not match the vote's authority", ErrInvalidField)
	}
	if err := v.validate(); err != nil {
		return nil, err
	}
	body := v.encodeBody()
	if len(body)+200 > MaxVoteSize {
		return nil, ErrTooLarge
	}
	w := &writer{}
	w.Write(body)
	w.line("signature", b64.EncodeToString(ed25519.Sign(priv, signedMessage(contextVote, body))))
	return w.Bytes(), nil
}

// ParseVote parses a vote and verifies its signature against the key it
// names, and every descriptor in it (each must be within its lifetime at
// the vote's published time). Whether the key belongs to a trusted
// authority is the caller's check (Authority.AddVote does it).
func ParseVote(b []byte) (*Vote, error) {
	r, err := newLineReader(b, MaxVoteSize)
	if err != nil {
		return nil, err
	}
	v := &Vote{}
	l, err := r.expect("veil-vote", 1)
	if err != nil {
		return nil, err
	}
	if l.args[0] != "1" {
		return nil, errAt(ErrMalformed, l, "unsupported version")
	}
	if l, err = r.expect("network", 1); err != nil {
		return nil, err
	}
	v.Network = l.args[0]
	if l, err = r.expect("authority", 1); err != nil {
		return nil, err
	}
	v.Authority = make(ed25519.PublicKey, ed25519.PublicKeySize)
	if err := decodeFixed(v.Authority, l.args[0]); err != nil {
		return nil, errAt(err, l, "bad key")
	}
	for _, f := range []struct {
		kw string
		t  *time.Time
	}{{"published", &v.Published}, {"valid-after", &v.ValidAfter}, {"fresh-until", &v.FreshUntil}, {"valid-until", &v.ValidUntil}} {
		if l, err = r.expect(f.kw, 1); err != nil {
			return nil, err
		}
		if *f.t, err = parseTime(l.args[0]); err != nil {
			return nil, errAt(err, l, "bad time")
		}
	}
	// Check the vote's own signature before the (costlier) descriptor
	// signatures, so a forged vote costs us one verification.
	var descLines []line
	var sigLine line
	for {
		l, ok, err := r.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: missing signature", ErrMalformed)
		}
		if l.kw == "signature" {
			sigLine = l
			break
		}
		if l.kw != "descriptor" || len(l.args) != 1 {
			return nil, errAt(ErrMalformed, l, "expected descriptor or signature")
		}
		if len(descLines) == MaxRelays {
			return nil, ErrTooManyRelays
		}
		descLines = append(descLines, l)
	}
	if len(sigLine.args) != 1 {
		return nil, errAt(ErrMalformed, sigLine, "want 1 argument")
	}
	var sig [ed25519.SignatureSize]byte
	if err := decodeFixed(sig[:], sigLine.args[0]); err != nil {
		return nil, errAt(err, sigLine, "bad signature encoding")
	}
	if err := r.expectEnd(); err != nil {
		return nil, err
	}
	body := b[:sigLine.start]
	if !ed25519.Verify(v.Authority, signedMessage(contextVote, body), sig[:]) {
		return nil, ErrBadSignature
	}
	for _, l := range descLines {
		raw, err := decodeVar(l.args[0], MaxDescriptorSize)
		if err != nil {
			return nil, errAt(err, l, "bad descriptor encoding")
		}
		d, err := parseDescriptor(raw)
		if err != nil {
			return nil, fmt.Errorf("vote line %d: %w", l.num, err)
		}
		v.Entries = append(v.Entries, VoteEntry{Raw: raw, Descriptor: d, Digest: DescriptorDigest(raw)})
	}
	if err := v.validate(); err != nil {
		return nil, err
	}
	if !bytes.Equal(v.encodeBody(), body) {
		return nil, ErrNonCanonical
	}
	return v, nil
}
