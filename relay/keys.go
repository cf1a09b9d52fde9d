package relay

import (
	"crypto/ed25519"
	"io"
	"path/filepath"

	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
)

// Keys are a relay's long-term keys, kept in its data directory as
// identity.key (Ed25519), link.key (X25519) and onion.key (X25519 +
// ML-KEM-768), each 0600 in a 0700 directory (crypto.WriteKeyFile).
type Keys struct {
	Identity ed25519.PrivateKey
	Link     crypto.StaticKey
	Onion    *crypto.OnionKey
}

// LoadOrCreateKeys reads the relay's keys from dir, creating any that are
// missing with rand.
func LoadOrCreateKeys(dir string, rand io.Reader) (*Keys, error) {
	id, err := crypto.LoadOrCreateIdentity(filepath.Join(dir, "identity.key"), rand)
	if err != nil {
		return nil, err
	}
	link, err := crypto.LoadOrCreateStatic(filepath.Join(dir, "link.key"), rand)
	if err != nil {
		return nil, err
	}
	onion, err := crypto.LoadOrCreateOnionKey(filepath.Join(dir, "onion.key"), rand)
	if err != nil {
		return nil, err
	}
	return &Keys{Identity: id, Link: link, Onion: onion}, nil
}

// Fingerprint is the relay's ID as operators see it.
func (k *Keys) Fingerprint() directory.RelayID {
	return directory.RelayID(k.Identity.Public().(ed25519.PublicKey))
}
