package directory

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// RelayID names a relay: its Ed25519 identity public key.
type RelayID [ed25519.PublicKeySize]byte

// String returns the uppercase hex form of id.
func (id RelayID) String() string { return strings.ToUpper(hex.EncodeToString(id[:])) }

// ParseRelayID parses the 64-digit hex form of a relay ID (either case).
func ParseRelayID(s string) (RelayID, error) {
	var id RelayID
	if len(s) != 2*len(id) {
		return RelayID{}, ErrInvalidField
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return RelayID{}, ErrInvalidField
	}
	return id, nil
}

// Descriptor is what a relay says about itself, signed with its identity
// key (docs/spec/directory.md, "Descriptor").
type Descriptor struct {
	Nickname   string            // 1-19 characters of [A-Za-z0-9]
	Identity   ed25519.PublicKey // Ed25519 identity key; the relay's ID
	LinkKey    [32]byte          // X25519 static key of the Noise XK link handshake
	OnionKey   [32]byte          // X25519 static key of the circuit handshake
	OnionKeyPQ []byte            // ML-KEM-768 encapsulation key of the circuit handshake, OnionKeyPQSize bytes; required
	Address    netip.AddrPort    // where the relay accepts links (ORPort)
	// DirAddress is where the relay serves the directory cache over HTTP
	// (relay/dircache); the zero value means it runs no cache.
	DirAddress netip.AddrPort
	Bandwidth  int64       // advertised bytes per second, 0..MaxBandwidth
	Family     []RelayID   // other relays of the same operator: sorted, distinct, not itself, at most MaxFamily
	Contact    string      // operator contact, free text, at most 128 printable ASCII characters
	ExitPolicy *ExitPolicy // nil means "reject *:*"
	Platform   string      // free text, at most 128 printable ASCII characters
	Published  time.Time   // encoded in UTC with second precision
	// Extra holds non-critical extension lines (keyword starting "x-"),
	// without their LF, in document order; at most MaxExtraLines. Parsers
	// keep them (they are signed) and otherwise ignore them; any other
	// unknown keyword makes the descriptor invalid.
	Extra []string
}

// HasDirCache reports whether the relay serves the directory cache.
func (d *Descriptor) HasDirCache() bool { return d.DirAddress.IsValid() }

// ID returns the relay's ID: a copy of its identity key.
func (d *Descriptor) ID() RelayID {
	var id RelayID
	copy(id[:], d.Identity)
	return id
}

// DescriptorDigest returns the SHA-256 digest of a signed descriptor's
// bytes; votes and the consensus name descriptors by it.
func DescriptorDigest(signed []byte) Digest { return sha256.Sum256(signed) }

// Sign encodes d and signs it with priv, returning the signed document.
// If d.Identity is nil, priv's public key is used; otherwise it must be
// priv's public key. Published is truncated to the second. Sign does not
// modify d.
func (d *Descriptor) Sign(priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: identity private key", ErrInvalidField)
	}
	pub := priv.Public().(ed25519.PublicKey)
	c := *d
	if c.Identity == nil {
		c.Identity = pub
	} else if !pub.Equal(c.Identity) {
		return nil, fmt.Errorf("%w: private key does not match the identity", ErrInvalidField)
	}
	c.Published = c.Published.UTC().Truncate(time.Second)
	if err := c.validate(); err != nil {
		return nil, err
	}
	body := c.encodeBody()
	sig := ed25519.Sign(priv, signedMessage(contextDescriptor, body))
	w := &writer{}
	w.Write(body)
	w.line("signature", b64.EncodeToString(sig))
	return w.Bytes(), nil
}

// validate checks every field's range.
func (d *Descriptor) validate() error {
	switch {
	case !validNickname(d.Nickname):
		return fmt.Errorf("%w: nickname", ErrInvalidField)
	case len(d.Identity) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: identity", ErrInvalidField)
	case !validRelayAddress(d.Address):
		return fmt.Errorf("%w: address", ErrInvalidField)
	case d.Bandwidth < 0 || d.Bandwidth > MaxBandwidth:
		return fmt.Errorf("%w: bandwidth", ErrInvalidField)
	case !validPlatform(d.Platform):
		return fmt.Errorf("%w: platform", ErrInvalidField)
	case d.Published.Year() < 1970 || d.Published.Year() > 9999:
		return fmt.Errorf("%w: published", ErrInvalidField)
	case d.ExitPolicy != nil && len(d.ExitPolicy.rules) > MaxPolicyRules:
		return fmt.Errorf("%w: exit policy", ErrInvalidField)
	case len(d.OnionKeyPQ) != OnionKeyPQSize:
		return fmt.Errorf("%w: onion-key-pq must be %d bytes", ErrInvalidField, OnionKeyPQSize)
	case d.DirAddress != (netip.AddrPort{}) && !validRelayAddress(d.DirAddress):
		return fmt.Errorf("%w: dir-address", ErrInvalidField)
	case !validPlatform(d.Contact):
		return fmt.Errorf("%w: contact", ErrInvalidField)
	case !validFamily(d.Family, d.ID()):
		return fmt.Errorf("%w: family", ErrInvalidField)
	case !validExtra(d.Extra):
		return fmt.Errorf("%w: extension lines", ErrInvalidField)
	}
	return nil
}

// validFamily accepts at most MaxFamily IDs, sorted, distinct, without
// self.
func validFamily(f []RelayID, self RelayID) bool {
	if len(f) > MaxFamily {
		return false
	}
	for i, id := range f {
		if id == self || i > 0 && bytes.Compare(f[i-1][:], id[:]) >= 0 {
			return false
		}
	}
	return true
}

// validExtra accepts at most MaxExtraLines lines, each a keyword starting
// with "x-" and arguments obeying the common grammar.
func validExtra(lines []string) bool {
	if len(lines) > MaxExtraLines {
		return false
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "x-") || len(l) > 1024 || l[len(l)-1] == ' ' || strings.Contains(l, "  ") {
			return false
		}
		kw, _, _ := strings.Cut(l, " ")
		for _, c := range []byte(kw) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
		for _, c := range []byte(l) {
			if c < 0x20 || c > 0x7e {
				return false
			}
		}
	}
	return true
}

// encodeFamily returns the base64 form of each ID.
func encodeFamily(f []RelayID) []string {
	out := make([]string, len(f))
	for i := range f {
		out[i] = b64.EncodeToString(f[i][:])
	}
	return out
}

// parseFamily decodes family arguments (order is checked by validate).
func parseFamily(args []string) ([]RelayID, error) {
	if len(args) > MaxFamily {
		return nil, ErrInvalidField
	}
	var out []RelayID
	for _, a := range args {
		var id RelayID
		if err := decodeFixed(id[:], a); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, nil
}

// freeText writes kw followed by text, or kw alone if text is empty.
func (w *writer) freeText(kw, text string) {
	if text == "" {
		w.line(kw)
	} else {
		w.line(kw, text)
	}
}

// validNickname reports whether s is 1-19 characters of [A-Za-z0-9].
func validNickname(s string) bool {
	if len(s) < 1 || len(s) > 19 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// validRelayAddress accepts a specified IPv4 or IPv6 address without a
// zone (IPv4-mapped IPv6 refused) and a non-zero port. Private and
// loopback addresses are allowed: the testnet runs on 127.0.0.0/8.
func validRelayAddress(ap netip.AddrPort) bool {
	a := ap.Addr()
	return a.IsValid() && a.Zone() == "" && !a.Is4In6() && !a.IsUnspecified() && ap.Port() != 0
}

// validPlatform accepts at most 128 printable ASCII characters without
// leading, trailing or doubled spaces.
func validPlatform(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return s == "" || s[0] != ' ' && s[len(s)-1] != ' ' && !strings.Contains(s, "  ")
}

// encodeBody writes every line of the descriptor except the signature.
func (d *Descriptor) encodeBody() []byte {
	w := &writer{}
	w.line("veil-descriptor", "1")
	w.line("nickname", d.Nickname)
	w.line("identity", b64.EncodeToString(d.Identity))
	w.line("link-key", b64.EncodeToString(d.LinkKey[:]))
	w.line("onion-key", b64.EncodeToString(d.OnionKey[:]))
	w.line("onion-key-pq", b64.EncodeToString(d.OnionKeyPQ))
	w.line("address", d.Address.String())
	if d.HasDirCache() {
		w.line("dir-address", d.DirAddress.String())
	}
	w.line("bandwidth", strconv.FormatInt(d.Bandwidth, 10))
	w.line("family", encodeFamily(d.Family)...)
	w.freeText("contact", d.Contact)
	w.freeText("platform", d.Platform)
	w.line("published", formatTime(d.Published))
	writePolicy(w, d.ExitPolicy)
	for _, x := range d.Extra {
		w.WriteString(x)
		w.WriteByte('\n')
	}
	return w.Bytes()
}

// readOptionalAddr reads the line "kw address" if it comes next; it
// returns the zero AddrPort if it does not.
func readOptionalAddr(r *lineReader, kw string) (netip.AddrPort, error) {
	l, ok, err := r.peek()
	if err != nil || !ok || l.kw != kw {
		return netip.AddrPort{}, err
	}
	r.next()
	if len(l.args) != 1 {
		return netip.AddrPort{}, errAt(ErrMalformed, l, "want 1 argument")
	}
	ap, err := netip.ParseAddrPort(l.args[0])
	if err != nil || !validRelayAddress(ap) {
		return netip.AddrPort{}, errAt(ErrInvalidField, l, "bad address")
	}
	return ap, nil
}

// ParseDescriptor parses a signed descriptor, verifies its signature
// against the identity key it carries, and checks that it was published
// no more than MaxClockSkew after now and no more than DescriptorLifetime
// before now. It accepts exactly the bytes Sign produces: any other
// spelling of the same content is refused.
func ParseDescriptor(b []byte, now time.Time) (*Descriptor, error) {
	d, err := parseDescriptor(b)
	if err != nil {
		return nil, err
	}
	if err := d.checkTime(now); err != nil {
		return nil, err
	}
	return d, nil
}

// checkTime applies the published-time window relative to now.
func (d *Descriptor) checkTime(now time.Time) error {
	if d.Published.After(now.Add(MaxClockSkew)) {
		return ErrDescriptorFuture
	}
	if d.Published.Before(now.Add(-DescriptorLifetime)) {
		return ErrDescriptorExpired
	}
	return nil
}

// parseDescriptor parses and verifies a descriptor without looking at
// the clock.
func parseDescriptor(b []byte) (*Descriptor, error) {
	r, err := newLineReader(b, MaxDescriptorSize)
	if err != nil {
		return nil, err
	}
	d := &Descriptor{}
	l, err := r.expect("veil-descriptor", 1)
	if err != nil {
		return nil, err
	}
	if l.args[0] != "1" {
		return nil, errAt(ErrMalformed, l, "unsupported version")
	}
	if l, err = r.expect("nickname", 1); err != nil {
		return nil, err
	}
	d.Nickname = l.args[0]
	if l, err = r.expect("identity", 1); err != nil {
		return nil, err
	}
	d.Identity = make(ed25519.PublicKey, ed25519.PublicKeySize)
	if err := decodeFixed(d.Identity, l.args[0]); err != nil {
		return nil, errAt(err, l, "bad key")
	}
	if l, err = r.expect("link-key", 1); err != nil {
		return nil, err
	}
	if err := decodeFixed(d.LinkKey[:], l.args[0]); err != nil {
		return nil, errAt(err, l, "bad key")
	}
	if l, err = r.expect("onion-key", 1); err != nil {
		return nil, err
	}
	if err := decodeFixed(d.OnionKey[:], l.args[0]); err != nil {
		return nil, errAt(err, l, "bad key")
	}
	if l, err = r.expect("onion-key-pq", 1); err != nil {
		return nil, err
	}
	d.OnionKeyPQ = make([]byte, OnionKeyPQSize)
	if err := decodeFixed(d.OnionKeyPQ, l.args[0]); err != nil {
		return nil, errAt(err, l, "bad key")
	}
	if l, err = r.expect("address", 1); err != nil {
		return nil, err
	}
	if d.Address, err = netip.ParseAddrPort(l.args[0]); err != nil {
		return nil, errAt(ErrInvalidField, l, "bad address")
	}
	if d.DirAddress, err = readOptionalAddr(r, "dir-address"); err != nil {
		return nil, err
	}
	if l, err = r.expect("bandwidth", 1); err != nil {
		return nil, err
	}
	if d.Bandwidth, err = parseInt(l.args[0], MaxBandwidth); err != nil {
		return nil, errAt(err, l, "bad number")
	}
	if l, err = r.expect("family", -1); err != nil {
		return nil, err
	}
	if d.Family, err = parseFamily(l.args); err != nil {
		return nil, errAt(ErrInvalidField, l, "bad family")
	}
	if l, err = r.expect("contact", -1); err != nil {
		return nil, err
	}
	d.Contact = strings.Join(l.args, " ")
	if l, err = r.expect("platform", -1); err != nil {
		return nil, err
	}
	d.Platform = strings.Join(l.args, " ")
	if l, err = r.expect("published", 1); err != nil {
		return nil, err
	}
	if d.Published, err = parseTime(l.args[0]); err != nil {
		return nil, errAt(err, l, "bad time")
	}
	if d.ExitPolicy, err = readPolicy(r); err != nil {
		return nil, err
	}
	for {
		l, ok, err := r.peek()
		if err != nil {
			return nil, err
		}
		if !ok || !strings.HasPrefix(l.kw, "x-") {
			break
		}
		r.next()
		if len(d.Extra) == MaxExtraLines {
			return nil, errAt(ErrMalformed, l, "too many extension lines")
		}
		d.Extra = append(d.Extra, string(b[l.start:r.off-1]))
	}
	sigLine, err := r.expect("signature", 1)
	if err != nil {
		return nil, err
	}
	var sig [ed25519.SignatureSize]byte
	if err := decodeFixed(sig[:], sigLine.args[0]); err != nil {
		return nil, errAt(err, sigLine, "bad signature encoding")
	}
	if err := r.expectEnd(); err != nil {
		return nil, err
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	body := b[:sigLine.start]
	if !bytes.Equal(d.encodeBody(), body) {
		return nil, ErrNonCanonical
	}
	if !ed25519.Verify(d.Identity, signedMessage(contextDescriptor, body), sig[:]) {
		return nil, ErrBadSignature
	}
	return d, nil
}
