package directory

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"time"
)

// Vote is one authority's signed view of the network for one round
// (docs/spec/directory.md, "Vote"): the descriptors it holds, each still
// signed by its relay, with the flags this authority assigns each relay,
// and the consensus parameters it proposes. Its signing key signs it;
// its certificate rides along.
type Vote struct {
	Network    string
	Authority  ed25519.PublicKey // = Cert.Identity
	Cert       *Cert
	Published  time.Time // when the vote was made; not after ValidAfter
	ValidAfter time.Time // the round the vote is for
	FreshUntil time.Time
	ValidUntil time.Time
	Params     Params
	Entries    []VoteEntry // sorted by relay ID, IDs distinct
}

// VoteEntry is one relay in a vote.
type VoteEntry struct {
	Raw        []byte // the signed descriptor as the relay uploaded it
	Descriptor *Descriptor
	Digest     Digest // DescriptorDigest(Raw)
	Flags      Flags  // the flags the voting authority assigns it
}

// validate checks the vote's times and entries (not signatures).
func (v *Vote) validate() error {
	if !validName(v.Network) || v.Cert == nil || !v.Authority.Equal(v.Cert.Identity) {
		return fmt.Errorf("%w: vote header", ErrInvalidField)
	}
	if v.Published.After(v.ValidAfter) || !v.FreshUntil.After(v.ValidAfter) ||
		v.ValidUntil.Before(v.FreshUntil) || v.ValidUntil.Sub(v.ValidAfter) > MaxConsensusLifetime {
		return fmt.Errorf("%w: vote times", ErrInvalidField)
	}
	if err := v.Params.Validate(); err != nil {
		return err
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
		if v.Entries[i].Flags&^allFlags != 0 {
			return fmt.Errorf("%w: vote flags", ErrInvalidField)
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
	w.line("cert", b64.EncodeToString(v.Cert.Raw))
	w.line("published", formatTime(v.Published))
	w.line("valid-after", formatTime(v.ValidAfter))
	w.line("fresh-until", formatTime(v.FreshUntil))
	w.line("valid-until", formatTime(v.ValidUntil))
	w.line("params", v.Params.args()...)
	for _, e := range v.Entries {
		w.line("descriptor", b64.EncodeToString(e.Raw))
		writeFlags(w, e.Flags)
	}
	return w.Bytes()
}

// Sign encodes v and signs it with s, whose certificate becomes v.Cert
// (and whose identity v.Authority).
func (v *Vote) Sign(s *Signer) ([]byte, error) {
	v.Cert, v.Authority = s.Cert, s.Cert.Identity
	if err := v.validate(); err != nil {
		return nil, err
	}
	body := v.encodeBody()
	if len(body)+8<<10 > MaxVoteSize {
		return nil, ErrTooLarge
	}
	sig := s.Key.sign(contextVote, body)
	w := &writer{}
	w.Write(body)
	writeSig(w, &sig)
	return w.Bytes(), nil
}

// ParseVote parses a vote, parses its certificate (ParseCert), verifies
// the vote's signature under the certified signing key, and verifies
// every descriptor in it (each must be within its lifetime at the vote's
// published time). Whether the certificate's identity is a trusted
// authority, and the certificate's validity at a time, are the caller's
// checks (Authority.AddVote does them with Cert.Check).
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
	if l, err = r.expect("cert", 1); err != nil {
		return nil, err
	}
	rawCert, err := decodeVar(l.args[0], MaxCertSize)
	if err != nil {
		return nil, errAt(err, l, "bad certificate encoding")
	}
	if v.Cert, err = ParseCert(rawCert); err != nil {
		return nil, err
	}
	v.Authority = v.Cert.Identity
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
	if l, err = r.expect("params", -1); err != nil {
		return nil, err
	}
	if v.Params, err = ParseParams(l.args); err != nil {
		return nil, errAt(err, l, "bad parameters")
	}
	// Check the vote's own signature before the (costlier) descriptor
	// signatures, so a forged vote costs us one verification.
	type pending struct {
		desc  line
		flags Flags
	}
	var entries []pending
	for {
		l, ok, err := r.peek()
		if err != nil {
			return nil, err
		}
		if !ok || l.kw != "descriptor" {
			break
		}
		r.next()
		if len(l.args) != 1 {
			return nil, errAt(ErrMalformed, l, "want 1 argument")
		}
		if len(entries) == MaxRelays {
			return nil, ErrTooManyRelays
		}
		fl, err := r.expect("flags", -1)
		if err != nil {
			return nil, err
		}
		f, err := parseFlags(fl.args)
		if err != nil {
			return nil, errAt(err, fl, "unknown, repeated or misordered flag")
		}
		entries = append(entries, pending{l, f})
	}
	sig, end, err := readSig(r)
	if err != nil {
		return nil, err
	}
	if err := r.expectEnd(); err != nil {
		return nil, err
	}
	body := b[:end]
	if !v.Cert.verify(contextVote, body, &sig) {
		return nil, ErrBadSignature
	}
	for _, p := range entries {
		raw, err := decodeVar(p.desc.args[0], MaxDescriptorSize)
		if err != nil {
			return nil, errAt(err, p.desc, "bad descriptor encoding")
		}
		d, err := parseDescriptor(raw)
		if err != nil {
			return nil, fmt.Errorf("vote line %d: %w", p.desc.num, err)
		}
		v.Entries = append(v.Entries, VoteEntry{Raw: raw, Descriptor: d, Digest: DescriptorDigest(raw), Flags: p.flags})
	}
	if err := v.validate(); err != nil {
		return nil, err
	}
	if !bytes.Equal(v.encodeBody(), body) {
		return nil, ErrNonCanonical
	}
	return v, nil
}
