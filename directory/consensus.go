package directory

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"
)

// RouterStatus is one relay as the consensus lists it
// (docs/spec/directory.md, "Consensus").
type RouterStatus struct {
	Nickname   string
	ID         RelayID  // the relay's Ed25519 identity key
	LinkKey    [32]byte // X25519 key of the link handshake (Noise XK)
	OnionKey   [32]byte // X25519 key of the circuit handshake
	OnionKeyPQ []byte   // ML-KEM-768 encapsulation key of the circuit handshake, OnionKeyPQSize bytes
	Address    netip.AddrPort
	DirAddress netip.AddrPort // where it serves the directory cache; zero if it runs none
	Bandwidth  int64          // median of the votes' values, bytes per second
	Flags      Flags
	ExitPolicy *ExitPolicy
	// Family lists the relays listed in the same consensus that declare
	// this relay in their family and that this relay declares in its own
	// (mutual declarations only), sorted.
	Family    []RelayID
	Published time.Time // published time of the chosen descriptor
	Digest    Digest    // SHA-256 of the chosen signed descriptor
}

// HasDirCache reports whether the relay serves the directory cache.
func (r *RouterStatus) HasDirCache() bool { return r.DirAddress.IsValid() }

// InFamily reports whether id is in r's (mutual) family.
func (r *RouterStatus) InFamily(id RelayID) bool {
	i := sort.Search(len(r.Family), func(i int) bool { return bytes.Compare(r.Family[i][:], id[:]) >= 0 })
	return i < len(r.Family) && r.Family[i] == id
}

// Identity returns the relay's identity key.
func (r *RouterStatus) Identity() ed25519.PublicKey {
	return append(ed25519.PublicKey(nil), r.ID[:]...)
}

// Consensus is the network's agreed view for one round.
type Consensus struct {
	Network    string
	ValidAfter time.Time      // start of the round; the consensus is valid from here
	FreshUntil time.Time      // when clients should fetch the next one
	ValidUntil time.Time      // after this the consensus must not be used
	Params     Params         // parameters a majority of voters proposed
	Weights    Weights        // bandwidth weights for path selection
	Relays     []RouterStatus // sorted by ID, IDs distinct
}

// Relay returns the relay with the given ID, or nil.
func (c *Consensus) Relay(id RelayID) *RouterStatus {
	i := sort.Search(len(c.Relays), func(i int) bool { return bytes.Compare(c.Relays[i].ID[:], id[:]) >= 0 })
	if i < len(c.Relays) && c.Relays[i].ID == id {
		return &c.Relays[i]
	}
	return nil
}

// IsFresh reports whether now is in [ValidAfter, FreshUntil).
func (c *Consensus) IsFresh(now time.Time) bool {
	return !now.Before(c.ValidAfter) && now.Before(c.FreshUntil)
}

// ConsensusSignature is one authority's signature on a consensus digest,
// made with the signing key of its certificate.
type ConsensusSignature struct {
	Authority ed25519.PublicKey // = Cert.Identity
	Cert      *Cert
	Sig       Sig
}

// SignedConsensus is a parsed consensus document whose signatures have
// not been checked against any network file.
type SignedConsensus struct {
	Consensus
	Body       []byte // the signed bytes: the document up to the first signature line
	Digest     Digest // SHA-256 of Body; what each authority signs
	Signatures []ConsensusSignature
}

// encodeBody returns the canonical body of c.
func (c *Consensus) encodeBody() []byte {
	w := &writer{}
	w.line("veil-consensus", "1")
	w.line("network", c.Network)
	w.line("valid-after", formatTime(c.ValidAfter))
	w.line("fresh-until", formatTime(c.FreshUntil))
	w.line("valid-until", formatTime(c.ValidUntil))
	w.line("params", c.Params.args()...)
	w.line("weights", c.Weights.args()...)
	for i := range c.Relays {
		r := &c.Relays[i]
		w.line("relay", r.Nickname, b64.EncodeToString(r.ID[:]), r.Address.String())
		w.line("published", formatTime(r.Published))
		w.line("digest", r.Digest.String())
		w.line("link-key", b64.EncodeToString(r.LinkKey[:]))
		w.line("onion-key", b64.EncodeToString(r.OnionKey[:]))
		w.line("onion-key-pq", b64.EncodeToString(r.OnionKeyPQ))
		if r.HasDirCache() {
			w.line("dir-address", r.DirAddress.String())
		}
		w.line("family", encodeFamily(r.Family)...)
		w.line("bandwidth", strconv.FormatInt(r.Bandwidth, 10))
		writeFlags(w, r.Flags)
		writePolicy(w, r.ExitPolicy)
	}
	return w.Bytes()
}

// validate checks c's times and relay list.
func (c *Consensus) validate() error {
	if !validName(c.Network) {
		return fmt.Errorf("%w: network name", ErrInvalidField)
	}
	if !c.FreshUntil.After(c.ValidAfter) || c.ValidUntil.Before(c.FreshUntil) ||
		c.ValidUntil.Sub(c.ValidAfter) > MaxConsensusLifetime {
		return fmt.Errorf("%w: consensus times", ErrInvalidField)
	}
	if err := c.Params.Validate(); err != nil {
		return err
	}
	if err := c.Weights.validate(); err != nil {
		return err
	}
	if len(c.Relays) > MaxRelays {
		return ErrTooManyRelays
	}
	for i := range c.Relays {
		r := &c.Relays[i]
		if i > 0 && bytes.Compare(c.Relays[i-1].ID[:], r.ID[:]) >= 0 {
			return fmt.Errorf("%w: relays not sorted by ID or repeated", ErrInvalidField)
		}
		if !validNickname(r.Nickname) || !validRelayAddress(r.Address) ||
			r.Bandwidth < 0 || r.Bandwidth > MaxBandwidth || r.Flags&^allFlags != 0 ||
			len(r.OnionKeyPQ) != OnionKeyPQSize || !validFamily(r.Family, r.ID) ||
			r.DirAddress != (netip.AddrPort{}) && !validRelayAddress(r.DirAddress) {
			return fmt.Errorf("%w: relay entry", ErrInvalidField)
		}
	}
	return nil
}

// ParseConsensus parses a consensus document without checking any
// signature or time. It accepts only the canonical encoding; signature
// lines (at least one, at most MaxConsensusSignatures) may repeat an
// authority and may name authorities of any network.
func ParseConsensus(b []byte) (*SignedConsensus, error) {
	r, err := newLineReader(b, MaxConsensusSize)
	if err != nil {
		return nil, err
	}
	sc := &SignedConsensus{}
	c := &sc.Consensus
	l, err := r.expect("veil-consensus", 1)
	if err != nil {
		return nil, err
	}
	if l.args[0] != "1" {
		return nil, errAt(ErrMalformed, l, "unsupported version")
	}
	if l, err = r.expect("network", 1); err != nil {
		return nil, err
	}
	c.Network = l.args[0]
	for _, f := range []struct {
		kw string
		t  *time.Time
	}{{"valid-after", &c.ValidAfter}, {"fresh-until", &c.FreshUntil}, {"valid-until", &c.ValidUntil}} {
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
	if c.Params, err = ParseParams(l.args); err != nil {
		return nil, errAt(err, l, "bad parameters")
	}
	if l, err = r.expect("weights", -1); err != nil {
		return nil, err
	}
	if c.Weights, err = parseWeights(l.args); err != nil {
		return nil, errAt(err, l, "bad weights")
	}
	for {
		l, ok, err := r.peek()
		if err != nil {
			return nil, err
		}
		if !ok || l.kw != "relay" {
			break
		}
		if len(c.Relays) == MaxRelays {
			return nil, ErrTooManyRelays
		}
		rs, err := parseRouterStatus(r)
		if err != nil {
			return nil, err
		}
		c.Relays = append(c.Relays, rs)
	}
	bodyEnd := len(b)
	for {
		l, ok, err := r.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if l.kw != "signature" || len(l.args) != 2 && len(l.args) != 3 {
			return nil, errAt(ErrMalformed, l, "expected signature")
		}
		if len(sc.Signatures) == 0 {
			bodyEnd = l.start
		}
		if len(sc.Signatures) == MaxConsensusSignatures {
			return nil, errAt(ErrMalformed, l, "too many signatures")
		}
		s, err := parseSignatureLine(l)
		if err != nil {
			return nil, err
		}
		sc.Signatures = append(sc.Signatures, s)
	}
	if len(sc.Signatures) == 0 {
		return nil, fmt.Errorf("%w: consensus has no signature", ErrMalformed)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	sc.Body = b[:bodyEnd]
	if !bytes.Equal(c.encodeBody(), sc.Body) {
		return nil, ErrNonCanonical
	}
	sc.Digest = sha256.Sum256(sc.Body)
	return sc, nil
}

// parseSignatureLine parses "signature <cert> <ed25519> [<ml-dsa>]".
func parseSignatureLine(l line) (ConsensusSignature, error) {
	var s ConsensusSignature
	raw, err := decodeVar(l.args[0], MaxCertSize)
	if err != nil {
		return s, errAt(err, l, "bad certificate encoding")
	}
	if s.Cert, err = ParseCert(raw); err != nil {
		return s, fmt.Errorf("line %d: %w", l.num, err)
	}
	s.Authority = s.Cert.Identity
	if decodeFixed(s.Sig.Ed[:], l.args[1]) != nil {
		return s, errAt(ErrInvalidField, l, "bad signature")
	}
	if len(l.args) == 3 {
		s.Sig.PQ = make([]byte, PQSignatureSize)
		if decodeFixed(s.Sig.PQ, l.args[2]) != nil {
			return s, errAt(ErrInvalidField, l, "bad signature")
		}
	}
	return s, nil
}

// parseRouterStatus reads one relay entry.
func parseRouterStatus(r *lineReader) (RouterStatus, error) {
	var rs RouterStatus
	l, err := r.expect("relay", 3)
	if err != nil {
		return rs, err
	}
	rs.Nickname = l.args[0]
	if err := decodeFixed(rs.ID[:], l.args[1]); err != nil {
		return rs, errAt(err, l, "bad relay ID")
	}
	if rs.Address, err = netip.ParseAddrPort(l.args[2]); err != nil {
		return rs, errAt(ErrInvalidField, l, "bad address")
	}
	if l, err = r.expect("published", 1); err != nil {
		return rs, err
	}
	if rs.Published, err = parseTime(l.args[0]); err != nil {
		return rs, errAt(err, l, "bad time")
	}
	if l, err = r.expect("digest", 1); err != nil {
		return rs, err
	}
	if err := decodeFixed(rs.Digest[:], l.args[0]); err != nil {
		return rs, errAt(err, l, "bad digest")
	}
	if l, err = r.expect("link-key", 1); err != nil {
		return rs, err
	}
	if err := decodeFixed(rs.LinkKey[:], l.args[0]); err != nil {
		return rs, errAt(err, l, "bad key")
	}
	if l, err = r.expect("onion-key", 1); err != nil {
		return rs, err
	}
	if err := decodeFixed(rs.OnionKey[:], l.args[0]); err != nil {
		return rs, errAt(err, l, "bad key")
	}
	if l, err = r.expect("onion-key-pq", 1); err != nil {
		return rs, err
	}
	rs.OnionKeyPQ = make([]byte, OnionKeyPQSize)
	if err := decodeFixed(rs.OnionKeyPQ, l.args[0]); err != nil {
		return rs, errAt(err, l, "bad key")
	}
	if rs.DirAddress, err = readOptionalAddr(r, "dir-address"); err != nil {
		return rs, err
	}
	if l, err = r.expect("family", -1); err != nil {
		return rs, err
	}
	if rs.Family, err = parseFamily(l.args); err != nil {
		return rs, errAt(ErrInvalidField, l, "bad family")
	}
	if l, err = r.expect("bandwidth", 1); err != nil {
		return rs, err
	}
	if rs.Bandwidth, err = parseInt(l.args[0], MaxBandwidth); err != nil {
		return rs, errAt(err, l, "bad number")
	}
	if l, err = r.expect("flags", -1); err != nil {
		return rs, err
	}
	if rs.Flags, err = parseFlags(l.args); err != nil {
		return rs, errAt(err, l, "unknown, repeated or misordered flag")
	}
	if rs.ExitPolicy, err = readPolicy(r); err != nil {
		return rs, err
	}
	return rs, nil
}

// VerifyConsensus parses a consensus and accepts it only if (1) it names
// net's network, (2) more than half of the authorities in net signed its
// digest with valid signatures (countValid) and (3) now is in
// [ValidAfter, ValidUntil]. This is the check every client and relay
// applies before using a consensus.
func VerifyConsensus(b []byte, net *Network, now time.Time) (*Consensus, error) {
	sc, err := VerifyConsensusSignatures(b, net, now)
	if err != nil {
		return nil, err
	}
	if now.Before(sc.ValidAfter) {
		return nil, ErrNotYetValid
	}
	if now.After(sc.ValidUntil) {
		return nil, ErrExpired
	}
	return &sc.Consensus, nil
}

// VerifyConsensusSignatures is VerifyConsensus without the check of the
// consensus's own validity window, for callers that apply their own
// tolerance (dirclient's clock-skew detection). Certificates are still
// checked at now.
func VerifyConsensusSignatures(b []byte, net *Network, now time.Time) (*SignedConsensus, error) {
	if net == nil || len(net.Authorities) == 0 {
		return nil, ErrNotEnoughSignatures
	}
	sc, err := ParseConsensus(b)
	if err != nil {
		return nil, err
	}
	if sc.Network != net.Name {
		return nil, ErrWrongNetwork
	}
	if sc.countValid(net, now) < net.Quorum() {
		return nil, ErrNotEnoughSignatures
	}
	return sc, nil
}

// countValid returns the number of distinct authorities of net with a
// valid signature on sc's digest: the signature's certificate passes
// Cert.Check(net, now) and the signature verifies under the certified
// signing key — both Ed25519 and ML-DSA-65 parts when the authority is
// hybrid in net. Other signature lines are ignored.
func (sc *SignedConsensus) countValid(net *Network, now time.Time) int {
	counted := make([]bool, len(net.Authorities))
	n := 0
	for i := range sc.Signatures {
		s := &sc.Signatures[i]
		j, err := s.Cert.Check(net, now)
		if err != nil || counted[j] {
			continue
		}
		if s.Cert.verify(contextConsensus, sc.Digest[:], &s.Sig) {
			counted[j] = true
			n++
		}
	}
	return n
}

// encodeSigned returns body followed by one signature line per element of
// sigs, in the given order.
func encodeSigned(body []byte, sigs []ConsensusSignature) []byte {
	w := &writer{}
	w.Write(body)
	for _, s := range sigs {
		args := []string{b64.EncodeToString(s.Cert.Raw), b64.EncodeToString(s.Sig.Ed[:])}
		if s.Sig.PQ != nil {
			args = append(args, b64.EncodeToString(s.Sig.PQ))
		}
		w.line("signature", args...)
	}
	return w.Bytes()
}
