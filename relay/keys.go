package relay

import (
	"crypto/ed25519"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
)

// Key file names in a relay's data directory.
const (
	IdentityKeyFile = "identity.key"
	LinkKeyFile     = "link.key"
	OnionKeyFile    = "onion.key"      // the current onion key; its mtime is when it was made
	PrevOnionFile   = "onion.key.prev" // the previous one; its mtime is when it was retired
	newOnionFile    = "onion.key.new"  // a rotation in progress
)

// Keys are a relay's long-term keys, kept in its data directory as
// identity.key (Ed25519), link.key (X25519) and onion.key (X25519 +
// ML-KEM-768), each 0600 in a 0700 directory (crypto.WriteKeyFile). During
// an onion key rotation's overlap, onion.key.prev holds the previous key.
type Keys struct {
	Identity ed25519.PrivateKey
	Link     crypto.StaticKey
	Onion    *crypto.OnionKey
	// OnionCreated is when Onion was made (the file's mtime).
	OnionCreated time.Time
	// PrevOnion is the previous onion key, or nil; PrevOnionRetired is
	// when it was replaced.
	PrevOnion        *crypto.OnionKey
	PrevOnionRetired time.Time
}

// LoadOrCreateKeys reads the relay's keys from dir, creating any that are
// missing with rand. It finishes a rotation that was interrupted between
// retiring the old onion key and installing the new one.
func LoadOrCreateKeys(dir string, rand io.Reader) (*Keys, error) {
	id, err := crypto.LoadOrCreateIdentity(filepath.Join(dir, IdentityKeyFile), rand)
	if err != nil {
		return nil, err
	}
	link, err := crypto.LoadOrCreateStatic(filepath.Join(dir, LinkKeyFile), rand)
	if err != nil {
		return nil, err
	}
	onionPath := filepath.Join(dir, OnionKeyFile)
	if _, err := os.Stat(onionPath); errors.Is(err, fs.ErrNotExist) {
		// A crash mid-rotation leaves the new key under its temporary name.
		if os.Rename(filepath.Join(dir, newOnionFile), onionPath) == nil {
			now := time.Now()
			os.Chtimes(onionPath, now, now)
		}
	}
	onion, err := crypto.LoadOrCreateOnionKey(onionPath, rand)
	if err != nil {
		return nil, err
	}
	k := &Keys{Identity: id, Link: link, Onion: onion}
	if fi, err := os.Stat(onionPath); err == nil {
		k.OnionCreated = fi.ModTime()
	}
	prevPath := filepath.Join(dir, PrevOnionFile)
	if fi, err := os.Stat(prevPath); err == nil {
		prev, err := crypto.LoadOrCreateOnionKey(prevPath, rand)
		if err != nil {
			return nil, err
		}
		k.PrevOnion, k.PrevOnionRetired = prev, fi.ModTime()
	}
	return k, nil
}

// Fingerprint is the relay's ID as operators see it.
func (k *Keys) Fingerprint() directory.RelayID {
	return directory.RelayID(k.Identity.Public().(ed25519.PublicKey))
}

// rotateOnionFiles installs next as the current onion key in dir and
// keeps the current one as the previous, in crash-safe steps: write
// onion.key.new, move onion.key to onion.key.prev (stamped with the
// retirement time), move onion.key.new to onion.key.
func rotateOnionFiles(dir string, next *crypto.OnionKey, now time.Time) error {
	newPath := filepath.Join(dir, newOnionFile)
	os.Remove(newPath)
	if err := crypto.WriteOnionKey(newPath, next); err != nil {
		return err
	}
	cur, prev := filepath.Join(dir, OnionKeyFile), filepath.Join(dir, PrevOnionFile)
	if err := os.Rename(cur, prev); err != nil {
		return err
	}
	os.Chtimes(prev, now, now)
	if err := os.Rename(newPath, cur); err != nil {
		return err
	}
	return os.Chtimes(cur, now, now)
}

// removePrevOnionFile deletes the previous onion key after the overlap.
func removePrevOnionFile(dir string) error {
	err := os.Remove(filepath.Join(dir, PrevOnionFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
