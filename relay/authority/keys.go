package authority

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
)

// An authority's data directory (docs/authority-operators.md):
//
//	identity.key      Ed25519 identity seed          keep offline after init
//	identity-pq.key   ML-DSA-65 identity seed (hybrid networks)   offline
//	signing.key       Ed25519 signing seed           online
//	signing-pq.key    ML-DSA-65 signing seed (hybrid)             online
//	certificate       the certificate identity issued for signing (public)
//
// Key files use crypto's key-file format (mode 0600 in a 0700 directory).
const (
	FileIdentity   = "identity.key"
	FileIdentityPQ = "identity-pq.key"
	FileSigning    = "signing.key"
	FileSigningPQ  = "signing-pq.key"
	FileCert       = "certificate"

	kindEd = crypto.KindIdentity  // an Ed25519 seed
	kindPQ = crypto.KindMLDSASeed // a 32-byte ML-DSA-65 seed

	// DefaultCertLifetime is the lifetime of certificates issued by
	// InitKeys and Certify unless told otherwise.
	DefaultCertLifetime = 90 * 24 * time.Hour
)

// ErrKeysExist is returned by InitKeys for a directory that already holds
// an identity key.
var ErrKeysExist = errors.New("authority: the directory already holds an identity key")

// InitKeys creates a new identity key (hybrid adds ML-DSA-65), a signing
// key and its certificate, valid from now for lifetime, in dir. It
// refuses a directory that already has an identity key.
func InitKeys(dir string, hybrid bool, rand io.Reader, now time.Time, lifetime time.Duration) (*directory.KeyPair, *directory.Signer, error) {
	if _, err := os.Stat(filepath.Join(dir, FileIdentity)); err == nil {
		return nil, nil, ErrKeysExist
	}
	id, err := directory.GenerateKeyPair(rand, hybrid)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKeyPair(dir, FileIdentity, FileIdentityPQ, id); err != nil {
		return nil, nil, err
	}
	s, err := Certify(id, dir, rand, now, lifetime)
	return id, s, err
}

// LoadIdentity reads the identity key from dir (identity-pq.key too, if
// present).
func LoadIdentity(dir string) (*directory.KeyPair, error) {
	return readKeyPair(dir, FileIdentity, FileIdentityPQ)
}

// Certify makes a new signing key and a certificate for it by identity,
// valid from now for lifetime, and installs both in dir, replacing the
// previous ones (each file atomically). The identity key need not be in
// dir: an operator runs this where the identity key is kept and copies
// signing.key, signing-pq.key and certificate to the authority.
func Certify(identity *directory.KeyPair, dir string, rand io.Reader, now time.Time, lifetime time.Duration) (*directory.Signer, error) {
	k, err := directory.GenerateKeyPair(rand, identity.PQ != nil)
	if err != nil {
		return nil, err
	}
	c, err := directory.IssueCert(identity, k, now.Add(-time.Minute), now.Add(lifetime))
	if err != nil {
		return nil, err
	}
	s, err := directory.NewSigner(k, c)
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(dir, ".new")
	os.RemoveAll(tmp)
	if err := writeKeyPair(tmp, FileSigning, FileSigningPQ, k); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, FileCert), c.Raw, 0o644); err != nil {
		return nil, err
	}
	for _, f := range []string{FileSigning, FileSigningPQ, FileCert} {
		err := os.Rename(filepath.Join(tmp, f), filepath.Join(dir, f))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if k.PQ == nil {
		os.Remove(filepath.Join(dir, FileSigningPQ))
	}
	return s, nil
}

// LoadSigner reads the signing key(s) and certificate from dir and checks
// that they match.
func LoadSigner(dir string) (*directory.Signer, error) {
	k, err := readKeyPair(dir, FileSigning, FileSigningPQ)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, FileCert))
	if err != nil {
		return nil, err
	}
	c, err := directory.ParseCert(raw)
	if err != nil {
		return nil, fmt.Errorf("authority: %s: %w", FileCert, err)
	}
	return directory.NewSigner(k, c)
}

func writeKeyPair(dir, edFile, pqFile string, k *directory.KeyPair) error {
	if err := crypto.WriteKeyFile(filepath.Join(dir, edFile), kindEd, k.Ed.Seed()); err != nil {
		return err
	}
	if k.PQ != nil {
		return crypto.WriteKeyFile(filepath.Join(dir, pqFile), kindPQ, k.PQ.Seed())
	}
	return nil
}

func readKeyPair(dir, edFile, pqFile string) (*directory.KeyPair, error) {
	ed, err := crypto.ReadKeyFile(filepath.Join(dir, edFile), kindEd)
	if err != nil {
		return nil, err
	}
	pq, err := crypto.ReadKeyFile(filepath.Join(dir, pqFile), kindPQ)
	if errors.Is(err, fs.ErrNotExist) {
		pq, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	return directory.KeyPairFromSeeds(ed, pq)
}
