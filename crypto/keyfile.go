package crypto

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Key files hold one key each, as a single text line:
//
//	veil-key-v1 <kind> <base64 of the private key material>\n
//
// where kind is "ed25519-identity" (the 32-byte Ed25519 seed),
// "x25519-static" (the 32-byte X25519 private key) or "onion-v1" (a hybrid
// onion key: the 32-byte X25519 private key followed by the 64-byte
// ML-KEM-768 seed d||z). Files are written 0600
// inside 0700 directories and refused on read when group or others may read
// them, as ssh does for private keys.

// Key kinds stored in key files.
const (
	KindIdentity = "ed25519-identity"
	KindStatic   = "x25519-static"
	KindOnion    = "onion-v1"
	// KindMLDSASeed is a 32-byte ML-DSA-65 seed (an authority's
	// post-quantum identity or signing key).
	KindMLDSASeed = "mldsa65-seed"
)

// keyLen is the length of the key material each kind holds.
func keyLen(kind string) int {
	if kind == KindOnion {
		return OnionKeyFileSize
	}
	return KeySize
}

const (
	keyFileMagic   = "veil-key-v1"
	maxKeyFileSize = 256
	keyFileMode    = 0o600
	keyDirMode     = 0o700
)

var (
	// ErrKeyFilePermissions is returned for key files or directories that
	// group or others can access.
	ErrKeyFilePermissions = errors.New("crypto: key file is accessible by group or others")
	// ErrKeyFileFormat is returned for key files that do not parse.
	ErrKeyFileFormat = errors.New("crypto: malformed key file")
)

// EncodeKeyFile returns the file contents for a key of the given kind.
func EncodeKeyFile(kind string, key []byte) []byte {
	return fmt.Appendf(nil, "%s %s %s\n", keyFileMagic, kind, base64.StdEncoding.EncodeToString(key))
}

// ParseKeyFile parses key file contents and checks the kind.
func ParseKeyFile(data []byte, kind string) ([]byte, error) {
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: too long", ErrKeyFileFormat)
	}
	line, ok := bytes.CutSuffix(data, []byte("\n"))
	if !ok {
		return nil, fmt.Errorf("%w: missing final newline", ErrKeyFileFormat)
	}
	fields := bytes.Split(line, []byte(" "))
	if len(fields) != 3 || string(fields[0]) != keyFileMagic {
		return nil, fmt.Errorf("%w: bad header", ErrKeyFileFormat)
	}
	if string(fields[1]) != kind {
		return nil, fmt.Errorf("%w: holds a %q key, want %q", ErrKeyFileFormat, fields[1], kind)
	}
	key := make([]byte, base64.StdEncoding.DecodedLen(len(fields[2])))
	n, err := base64.StdEncoding.Strict().Decode(key, fields[2])
	// Go's decoder skips \r and \n inside the text: re-encoding refuses
	// those and any other non-canonical form (found by FuzzParseKeyFile).
	if err != nil || n != keyLen(kind) || base64.StdEncoding.EncodeToString(key[:n]) != string(fields[2]) {
		return nil, fmt.Errorf("%w: key is not %d bytes of base64", ErrKeyFileFormat, keyLen(kind))
	}
	return key[:n], nil
}

// EnsureKeyDir creates dir (and parents) with mode 0700 if missing and
// refuses an existing directory that group or others can access.
func EnsureKeyDir(dir string) error {
	if err := os.MkdirAll(dir, keyDirMode); err != nil {
		return fmt.Errorf("crypto: creating key directory: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("crypto: key directory: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: directory %s has mode %v", ErrKeyFilePermissions, dir, st.Mode().Perm())
	}
	return nil
}

// WriteKeyFile writes a key atomically with mode 0600 into a 0700
// directory. It refuses to overwrite an existing file: losing a relay's or
// authority's identity key by accident cannot be undone.
func WriteKeyFile(path, kind string, key []byte) error {
	if err := EnsureKeyDir(filepath.Dir(path)); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, keyFileMode)
	if err != nil {
		return fmt.Errorf("crypto: creating key file: %w", err)
	}
	_, werr := f.Write(EncodeKeyFile(kind, key))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return fmt.Errorf("crypto: writing key file: %w", err)
	}
	return nil
}

// ReadKeyFile reads a key of the given kind, refusing files or directories
// that group or others can access.
func ReadKeyFile(path, kind string) ([]byte, error) {
	if err := checkPrivate(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := checkPrivate(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("crypto: reading key file: %w", err)
	}
	return ParseKeyFile(data, kind)
}

func checkPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("crypto: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %v", ErrKeyFilePermissions, path, st.Mode().Perm())
	}
	return nil
}

// LoadOrCreateIdentity reads the Ed25519 identity key at path, or creates
// one with rand if the file does not exist.
func LoadOrCreateIdentity(path string, rand io.Reader) (ed25519.PrivateKey, error) {
	seed, err := ReadKeyFile(path, KindIdentity)
	if err == nil {
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	priv, err := GenerateIdentityKey(rand)
	if err != nil {
		return nil, err
	}
	if err := WriteKeyFile(path, KindIdentity, priv.Seed()); err != nil {
		return nil, err
	}
	return priv, nil
}

// LoadOrCreateStatic reads the X25519 key at path, or creates one.
func LoadOrCreateStatic(path string, rand io.Reader) (StaticKey, error) {
	raw, err := ReadKeyFile(path, KindStatic)
	if err == nil {
		return StaticKeyFromPrivate([KeySize]byte(raw))
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return StaticKey{}, err
	}
	k, err := GenerateStaticKey(rand)
	if err != nil {
		return StaticKey{}, err
	}
	if err := WriteKeyFile(path, KindStatic, k.Private[:]); err != nil {
		return StaticKey{}, err
	}
	return k, nil
}
