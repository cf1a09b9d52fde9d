package directory

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// This file holds the authority key hierarchy (docs/spec/directory.md,
// "Authority keys and certificates"):
//
//	identity key (Ed25519, optionally + ML-DSA-65), listed in the network
//	file, may be kept offline
//	  └─ signs a certificate: signing key(s), published, expires
//	       └─ signing key (Ed25519, optionally + ML-DSA-65), online,
//	          signs votes, consensus digests, detached signatures
//
// A certificate travels with every document its signing key signs.

// Sizes of the ML-DSA-65 parts (circl).
const (
	PQPublicKeySize = mldsa65.PublicKeySize // 1952
	PQSignatureSize = mldsa65.SignatureSize // 3309
	PQSeedSize      = mldsa65.SeedSize      // 32

	// MaxCertSize bounds a certificate document.
	MaxCertSize = 12 << 10
	// MaxCertLifetime bounds expires minus published of a certificate.
	MaxCertLifetime = 2 * 366 * 24 * time.Hour
)

// contextCert is the signature context of certificates.
const contextCert = "veil-authority-cert-v1"

// KeyPair is an authority key: Ed25519, and optionally ML-DSA-65 for
// hybrid signatures. It is used both for identity keys and for signing
// keys.
type KeyPair struct {
	Ed ed25519.PrivateKey
	PQ *mldsa65.PrivateKey // nil: Ed25519 only
}

// GenerateKeyPair draws a new key pair from rand; hybrid adds an
// ML-DSA-65 key.
func GenerateKeyPair(rand io.Reader, hybrid bool) (*KeyPair, error) {
	_, ed, err := ed25519.GenerateKey(rand)
	if err != nil {
		return nil, err
	}
	k := &KeyPair{Ed: ed}
	if hybrid {
		var seed [PQSeedSize]byte
		if _, err := io.ReadFull(rand, seed[:]); err != nil {
			return nil, err
		}
		_, k.PQ = mldsa65.NewKeyFromSeed(&seed)
	}
	return k, nil
}

// KeyPairFromSeeds rebuilds a key pair from its Ed25519 seed and, if
// pqSeed is non-nil, its ML-DSA-65 seed (PQSeedSize bytes).
func KeyPairFromSeeds(edSeed, pqSeed []byte) (*KeyPair, error) {
	if len(edSeed) != ed25519.SeedSize || pqSeed != nil && len(pqSeed) != PQSeedSize {
		return nil, fmt.Errorf("%w: key seed length", ErrInvalidField)
	}
	k := &KeyPair{Ed: ed25519.NewKeyFromSeed(edSeed)}
	if pqSeed != nil {
		var seed [PQSeedSize]byte
		copy(seed[:], pqSeed)
		_, k.PQ = mldsa65.NewKeyFromSeed(&seed)
	}
	return k, nil
}

// Public returns the Ed25519 public key.
func (k *KeyPair) Public() ed25519.PublicKey { return k.Ed.Public().(ed25519.PublicKey) }

// PublicPQ returns the packed ML-DSA-65 public key, or nil.
func (k *KeyPair) PublicPQ() []byte {
	if k.PQ == nil {
		return nil
	}
	return k.PQ.Public().(*mldsa65.PublicKey).Bytes()
}

// Sig is a signature: Ed25519, plus ML-DSA-65 when the key is hybrid.
type Sig struct {
	Ed [ed25519.SignatureSize]byte
	PQ []byte // PQSignatureSize bytes, or nil
}

// sign signs context 0x00 data with k. ML-DSA signing is deterministic
// (no randomness): the same key and message give the same bytes.
func (k *KeyPair) sign(context string, data []byte) Sig {
	msg := signedMessage(context, data)
	var s Sig
	copy(s.Ed[:], ed25519.Sign(k.Ed, msg))
	if k.PQ != nil {
		s.PQ = make([]byte, PQSignatureSize)
		if err := mldsa65.SignTo(k.PQ, msg, nil, false, s.PQ); err != nil {
			panic("directory: ML-DSA-65 signing failed: " + err.Error()) // only on a nil key
		}
	}
	return s
}

// verifySig checks s over context 0x00 data under ed and, iff pq is
// non-nil, under pq too: a hybrid key's signature needs both parts, an
// Ed25519-only key's signature must have no PQ part.
func verifySig(ed ed25519.PublicKey, pq []byte, context string, data []byte, s *Sig) bool {
	if len(ed) != ed25519.PublicKeySize || (pq == nil) != (s.PQ == nil) {
		return false
	}
	msg := signedMessage(context, data)
	if !ed25519.Verify(ed, msg, s.Ed[:]) {
		return false
	}
	if pq == nil {
		return true
	}
	if len(pq) != PQPublicKeySize || len(s.PQ) != PQSignatureSize {
		return false
	}
	var pk mldsa65.PublicKey
	if pk.UnmarshalBinary(pq) != nil {
		return false
	}
	return mldsa65.Verify(&pk, msg, nil, s.PQ)
}

// writeSig writes "signature <ed>" and, for a hybrid signature,
// "signature-pq <pq>".
func writeSig(w *writer, s *Sig) {
	w.line("signature", b64.EncodeToString(s.Ed[:]))
	if s.PQ != nil {
		w.line("signature-pq", b64.EncodeToString(s.PQ))
	}
}

// readSig reads the lines writeSig writes; it returns the offset of the
// first one (the end of the signed body).
func readSig(r *lineReader) (Sig, int, error) {
	var s Sig
	l, err := r.expect("signature", 1)
	if err != nil {
		return s, 0, err
	}
	if err := decodeFixed(s.Ed[:], l.args[0]); err != nil {
		return s, 0, errAt(err, l, "bad signature encoding")
	}
	next, ok, err := r.peek()
	if err != nil {
		return s, 0, err
	}
	if ok && next.kw == "signature-pq" {
		r.next()
		if len(next.args) != 1 {
			return s, 0, errAt(ErrMalformed, next, "want 1 argument")
		}
		s.PQ = make([]byte, PQSignatureSize)
		if err := decodeFixed(s.PQ, next.args[0]); err != nil {
			return s, 0, errAt(err, next, "bad signature encoding")
		}
	}
	return s, l.start, nil
}

// Cert is an authority certificate: the identity key vouches for a
// signing key until Expires (docs/spec/directory.md, "Certificate").
type Cert struct {
	Identity     ed25519.PublicKey // the authority's identity, as in the network file
	SigningKey   ed25519.PublicKey
	SigningKeyPQ []byte // packed ML-DSA-65 public key; present iff the identity is hybrid
	Published    time.Time
	Expires      time.Time
	Sig          Sig    // by the identity key (both parts if hybrid)
	Raw          []byte // the signed document
}

// IssueCert makes the certificate by which identity vouches for signing
// from published until expires. Both keys must be hybrid or both not.
func IssueCert(identity, signing *KeyPair, published, expires time.Time) (*Cert, error) {
	if (identity.PQ == nil) != (signing.PQ == nil) {
		return nil, fmt.Errorf("%w: identity and signing key must both be hybrid or both not", ErrInvalidField)
	}
	c := &Cert{
		Identity:     identity.Public(),
		SigningKey:   signing.Public(),
		SigningKeyPQ: signing.PublicPQ(),
		Published:    published.UTC().Truncate(time.Second),
		Expires:      expires.UTC().Truncate(time.Second),
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	body := c.encodeBody()
	c.Sig = identity.sign(contextCert, body)
	w := &writer{}
	w.Write(body)
	writeSig(w, &c.Sig)
	c.Raw = w.Bytes()
	return c, nil
}

func (c *Cert) validate() error {
	switch {
	case len(c.Identity) != ed25519.PublicKeySize || len(c.SigningKey) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: certificate keys", ErrInvalidField)
	case c.SigningKeyPQ != nil && len(c.SigningKeyPQ) != PQPublicKeySize:
		return fmt.Errorf("%w: certificate PQ key", ErrInvalidField)
	case !c.Expires.After(c.Published) || c.Expires.Sub(c.Published) > MaxCertLifetime ||
		c.Published.Year() < 1970 || c.Expires.Year() > 9999:
		return fmt.Errorf("%w: certificate times", ErrInvalidField)
	}
	return nil
}

func (c *Cert) encodeBody() []byte {
	w := &writer{}
	w.line("veil-authority-cert", "1")
	w.line("identity", b64.EncodeToString(c.Identity))
	w.line("signing-key", b64.EncodeToString(c.SigningKey))
	if c.SigningKeyPQ != nil {
		w.line("signing-key-pq", b64.EncodeToString(c.SigningKeyPQ))
	}
	w.line("published", formatTime(c.Published))
	w.line("expires", formatTime(c.Expires))
	return w.Bytes()
}

// ParseCert parses a certificate and checks its Ed25519 signature under
// the identity it names. The ML-DSA part, whether the identity is in a
// network file, and the time window are checked by Check.
func ParseCert(b []byte) (*Cert, error) {
	r, err := newLineReader(b, MaxCertSize)
	if err != nil {
		return nil, err
	}
	c := &Cert{}
	l, err := r.expect("veil-authority-cert", 1)
	if err != nil {
		return nil, err
	}
	if l.args[0] != "1" {
		return nil, errAt(ErrMalformed, l, "unsupported version")
	}
	for _, f := range []struct {
		kw string
		k  *ed25519.PublicKey
	}{{"identity", &c.Identity}, {"signing-key", &c.SigningKey}} {
		if l, err = r.expect(f.kw, 1); err != nil {
			return nil, err
		}
		*f.k = make(ed25519.PublicKey, ed25519.PublicKeySize)
		if err := decodeFixed(*f.k, l.args[0]); err != nil {
			return nil, errAt(err, l, "bad key")
		}
	}
	if l, ok, err := r.peek(); err != nil {
		return nil, err
	} else if ok && l.kw == "signing-key-pq" {
		r.next()
		c.SigningKeyPQ = make([]byte, PQPublicKeySize)
		if len(l.args) != 1 || decodeFixed(c.SigningKeyPQ, l.args[0]) != nil {
			return nil, errAt(ErrInvalidField, l, "bad key")
		}
	}
	for _, f := range []struct {
		kw string
		t  *time.Time
	}{{"published", &c.Published}, {"expires", &c.Expires}} {
		if l, err = r.expect(f.kw, 1); err != nil {
			return nil, err
		}
		if *f.t, err = parseTime(l.args[0]); err != nil {
			return nil, errAt(err, l, "bad time")
		}
	}
	var end int
	if c.Sig, end, err = readSig(r); err != nil {
		return nil, err
	}
	if err := r.expectEnd(); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	body := b[:end]
	if !bytes.Equal(c.encodeBody(), body) {
		return nil, ErrNonCanonical
	}
	if (c.SigningKeyPQ == nil) != (c.Sig.PQ == nil) {
		return nil, fmt.Errorf("%w: certificate PQ signature present iff PQ key", ErrMalformed)
	}
	if !ed25519.Verify(c.Identity, signedMessage(contextCert, body), c.Sig.Ed[:]) {
		return nil, fmt.Errorf("%w: certificate", ErrBadSignature)
	}
	c.Raw = bytes.Clone(b)
	return c, nil
}

// Check verifies c against net at now: the identity is one of net's
// authorities (its index is returned); the certificate is hybrid iff that
// authority has an ML-DSA identity key in net, and then the ML-DSA
// signature verifies under it; and Published-MaxClockSkew <= now <=
// Expires.
func (c *Cert) Check(net *Network, now time.Time) (int, error) {
	i := net.Index(c.Identity)
	if i < 0 {
		return -1, ErrUnknownAuthority
	}
	a := &net.Authorities[i]
	if (a.IdentityPQ == nil) != (c.SigningKeyPQ == nil) {
		return i, fmt.Errorf("%w: certificate must be hybrid iff the network file lists an ML-DSA identity", ErrBadSignature)
	}
	body := c.encodeBody()
	if !verifySig(a.Identity, a.IdentityPQ, contextCert, body, &c.Sig) {
		return i, fmt.Errorf("%w: certificate", ErrBadSignature)
	}
	if now.Before(c.Published.Add(-MaxClockSkew)) {
		return i, ErrCertNotYetValid
	}
	if now.After(c.Expires) {
		return i, ErrCertExpired
	}
	return i, nil
}

// verify checks a document signature s over context 0x00 data under c's
// signing key(s).
func (c *Cert) verify(context string, data []byte, s *Sig) bool {
	return verifySig(c.SigningKey, c.SigningKeyPQ, context, data, s)
}

// Signer is what a running authority signs with: its signing key and the
// certificate that vouches for it.
type Signer struct {
	Key  *KeyPair
	Cert *Cert
}

// NewSigner checks that cert certifies key and returns the signer.
func NewSigner(key *KeyPair, cert *Cert) (*Signer, error) {
	if key == nil || cert == nil || !key.Public().Equal(cert.SigningKey) || !bytes.Equal(key.PublicPQ(), cert.SigningKeyPQ) {
		return nil, fmt.Errorf("%w: the certificate is not for this signing key", ErrInvalidField)
	}
	return &Signer{Key: key, Cert: cert}, nil
}

// SelfSigner returns a signer whose signing key is a fresh key drawn from
// rand, certified by identity from now for lifetime. It is for tests and
// the testnet, where the identity key is online anyway.
func SelfSigner(identity *KeyPair, rand io.Reader, now time.Time, lifetime time.Duration) (*Signer, error) {
	k, err := GenerateKeyPair(rand, identity.PQ != nil)
	if err != nil {
		return nil, err
	}
	c, err := IssueCert(identity, k, now.Add(-time.Minute), now.Add(lifetime))
	if err != nil {
		return nil, err
	}
	return NewSigner(k, c)
}
