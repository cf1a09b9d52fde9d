package directory

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Network is the content of a network file: the name of a veil network and
// the directory authorities that clients and relays trust for it
// (docs/spec/directory.md, "Network file"). It is the root of trust.
type Network struct {
	Name string // 1-64 characters of [A-Za-z0-9._-]
	// RequirePQ makes hybrid Ed25519 + ML-DSA-65 signatures mandatory:
	// every authority must have IdentityPQ ("signatures = \"hybrid\"").
	// Without it, an authority with IdentityPQ must still sign hybrid,
	// and one without signs with Ed25519 only.
	RequirePQ   bool
	Authorities []AuthorityInfo
}

// AuthorityInfo is one authority in a network file.
type AuthorityInfo struct {
	Name     string            // 1-64 characters of [A-Za-z0-9._-], unique
	Address  string            // host:port of its HTTP directory port, unique
	Identity ed25519.PublicKey // Ed25519 identity key that certifies its signing keys, unique
	// IdentityPQ is the authority's ML-DSA-65 identity key (packed,
	// PQPublicKeySize bytes), or nil. If set, its certificates and every
	// signature it makes must be hybrid.
	IdentityPQ []byte
}

// networkFile is the TOML shape of a network file.
type networkFile struct {
	Name       string `toml:"name"`
	Signatures string `toml:"signatures"`
	Authority  []struct {
		Name       string `toml:"name"`
		Address    string `toml:"address"`
		Identity   string `toml:"identity"`
		IdentityPQ string `toml:"identity-pq"`
	} `toml:"authority"`
}

// ParseNetwork parses and validates a network file. Unknown keys, a
// missing field, duplicate names, addresses or identities, and more than
// MaxAuthorities authorities are refused.
func ParseNetwork(b []byte) (n *Network, err error) {
	if len(b) > MaxNetworkSize {
		return nil, ErrTooLarge
	}
	defer func() {
		// The TOML decoder is third-party code reading untrusted bytes:
		// fail closed if it ever panics.
		if recover() != nil {
			n, err = nil, fmt.Errorf("%w: network file", ErrMalformed)
		}
	}()
	var f networkFile
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&f)
	if err != nil {
		return nil, fmt.Errorf("%w: network file: %v", ErrMalformed, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("%w: network file: unknown key %q", ErrMalformed, und[0].String())
	}
	n = &Network{Name: f.Name}
	switch f.Signatures {
	case "", "ed25519":
	case "hybrid":
		n.RequirePQ = true
	default:
		return nil, fmt.Errorf("%w: network file: signatures must be \"ed25519\" or \"hybrid\"", ErrInvalidField)
	}
	for _, a := range f.Authority {
		info := AuthorityInfo{Name: a.Name, Address: a.Address, Identity: make(ed25519.PublicKey, ed25519.PublicKeySize)}
		if err := decodeFixed(info.Identity, a.Identity); err != nil {
			return nil, fmt.Errorf("%w: network file: authority %q: bad identity", ErrInvalidField, a.Name)
		}
		if a.IdentityPQ != "" {
			info.IdentityPQ = make([]byte, PQPublicKeySize)
			if err := decodeFixed(info.IdentityPQ, a.IdentityPQ); err != nil {
				return nil, fmt.Errorf("%w: network file: authority %q: bad identity-pq", ErrInvalidField, a.Name)
			}
		}
		n.Authorities = append(n.Authorities, info)
		if len(n.Authorities) > MaxAuthorities {
			return nil, fmt.Errorf("%w: network file: more than %d authorities", ErrInvalidField, MaxAuthorities)
		}
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	return n, nil
}

// Validate checks the network's names, addresses and keys.
func (n *Network) Validate() error {
	if !validName(n.Name) {
		return fmt.Errorf("%w: network name", ErrInvalidField)
	}
	if len(n.Authorities) == 0 || len(n.Authorities) > MaxAuthorities {
		return fmt.Errorf("%w: need 1 to %d authorities", ErrInvalidField, MaxAuthorities)
	}
	names := map[string]bool{}
	addrs := map[string]bool{}
	ids := map[RelayID]bool{}
	for _, a := range n.Authorities {
		if !validName(a.Name) || names[a.Name] {
			return fmt.Errorf("%w: authority name missing, invalid or duplicated", ErrInvalidField)
		}
		if !validHostPort(a.Address) || addrs[a.Address] {
			return fmt.Errorf("%w: authority %q: address invalid or duplicated", ErrInvalidField, a.Name)
		}
		var id RelayID
		if len(a.Identity) != len(id) {
			return fmt.Errorf("%w: authority %q: identity", ErrInvalidField, a.Name)
		}
		copy(id[:], a.Identity)
		if a.IdentityPQ != nil && len(a.IdentityPQ) != PQPublicKeySize || n.RequirePQ && a.IdentityPQ == nil {
			return fmt.Errorf("%w: authority %q: identity-pq missing or invalid", ErrInvalidField, a.Name)
		}
		if ids[id] {
			return fmt.Errorf("%w: authority %q: duplicated identity", ErrInvalidField, a.Name)
		}
		names[a.Name], addrs[a.Address], ids[id] = true, true, true
	}
	return nil
}

// Encode returns the canonical TOML form of n, which ParseNetwork reads
// back to an equal Network.
func (n *Network) Encode() []byte {
	var b bytes.Buffer
	b.WriteString("# veil network file: the directory authorities this network trusts.\n")
	fmt.Fprintf(&b, "name = \"%s\"\n", n.Name)
	if n.RequirePQ {
		b.WriteString("signatures = \"hybrid\"\n")
	}
	for _, a := range n.Authorities {
		b.WriteString("\n[[authority]]\n")
		fmt.Fprintf(&b, "name = \"%s\"\n", a.Name)
		fmt.Fprintf(&b, "address = \"%s\"\n", a.Address)
		fmt.Fprintf(&b, "identity = \"%s\"\n", b64.EncodeToString(a.Identity))
		if a.IdentityPQ != nil {
			fmt.Fprintf(&b, "identity-pq = \"%s\"\n", b64.EncodeToString(a.IdentityPQ))
		}
	}
	return b.Bytes()
}

// Index returns the position of the authority whose identity is id, or
// -1.
func (n *Network) Index(id ed25519.PublicKey) int {
	for i, a := range n.Authorities {
		if a.Identity.Equal(id) {
			return i
		}
	}
	return -1
}

// Quorum returns the number of authorities that is more than half of
// those in the network file: the votes a relay needs to be listed and the
// signatures a consensus needs to be accepted.
func (n *Network) Quorum() int { return len(n.Authorities)/2 + 1 }

// validName accepts 1-64 characters of [A-Za-z0-9._-].
func validName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validHostPort accepts "host:port" where host is a DNS name, a dotted
// IPv4 address or a bracketed IPv6 address, and port is 1-65535 without
// leading zeros.
func validHostPort(s string) bool {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || len(s) > 255 {
		return false
	}
	host, port := s[:i], s[i+1:]
	if p, err := parseInt(port, 65535); err != nil || p == 0 || strconv.FormatInt(p, 10) != port {
		return false
	}
	if strings.HasPrefix(host, "[") {
		return strings.HasSuffix(host, "]") && !strings.ContainsAny(host[1:len(host)-1], "[]%") &&
			validIPv6(host[1:len(host)-1])
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validIPv6 accepts an IPv6 address without a zone.
func validIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6() && a.Zone() == ""
}
