// Package dirtest simulates a veil directory in virtual time: n
// authorities (the sans-IO directory.Authority) exchanging votes and
// signatures over an in-memory bus, relays uploading descriptors and
// answering (or not) reachability tests, and any authority offline or
// malicious. It is deterministic: the same calls give byte-identical
// documents. Tests of directory, dirclient and the client use it.
package dirtest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"time"

	"github.com/veilnet/veil/directory"
)

// Start is the virtual time at which a Net starts.
var Start = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// Schedule is the voting schedule of a Net: ten-minute rounds.
var Schedule = directory.Schedule{Interval: 10 * time.Minute, VoteDelay: time.Minute, SigDelay: time.Minute}

// Key derives a deterministic Ed25519 key from a label.
func Key(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("veil dirtest " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

// Relay is a simulated relay.
type Relay struct {
	Key   ed25519.PrivateKey
	Desc  *directory.Descriptor
	Alive bool // answers reachability tests
}

// ID returns the relay's ID.
func (r *Relay) ID() directory.RelayID { return r.Desc.ID() }

// Net is a simulated directory.
type Net struct {
	Network *directory.Network
	Signers []*directory.Signer
	Auths   []*directory.Authority
	Online  []bool // an offline authority neither sends nor receives
	Relays  []*Relay
	Now     time.Time // the virtual clock
}

// Options tune New.
type Options struct {
	Hybrid bool // ML-DSA-65 identities, and a network that requires them
}

// New returns a network of nAuth authorities, all online, and nRelay
// relays, all alive, at Start.
func New(nAuth, nRelay int, opt Options) *Net {
	n := &Net{Network: &directory.Network{Name: "simnet", RequirePQ: opt.Hybrid}, Now: Start}
	for i := range nAuth {
		id, err := directory.KeyPairFromSeeds(Key(fmt.Sprint("authority id ", i)).Seed(), pqSeed(opt.Hybrid, "id", i))
		must(err)
		sk, err := directory.KeyPairFromSeeds(Key(fmt.Sprint("authority signing ", i)).Seed(), pqSeed(opt.Hybrid, "signing", i))
		must(err)
		cert, err := directory.IssueCert(id, sk, Start.Add(-time.Hour), Start.Add(30*24*time.Hour))
		must(err)
		s, err := directory.NewSigner(sk, cert)
		must(err)
		n.Signers = append(n.Signers, s)
		n.Online = append(n.Online, true)
		n.Network.Authorities = append(n.Network.Authorities, directory.AuthorityInfo{
			Name: fmt.Sprint("auth", i), Address: fmt.Sprintf("127.0.%d.1:7000", i),
			Identity: id.Public(), IdentityPQ: id.PublicPQ(),
		})
	}
	for i := range nAuth {
		a, err := directory.NewAuthority(directory.AuthorityConfig{Network: n.Network, Schedule: Schedule, Signer: n.Signers[i]})
		must(err)
		n.Auths = append(n.Auths, a)
	}
	for i := range nRelay {
		n.Relays = append(n.Relays, NewRelay(fmt.Sprint("relay", i), i, Start))
	}
	return n
}

func pqSeed(hybrid bool, what string, i int) []byte {
	if !hybrid {
		return nil
	}
	s := sha256.Sum256([]byte(fmt.Sprint("veil dirtest pq ", what, i)))
	return s[:]
}

func must(err error) {
	if err != nil {
		panic("dirtest: " + err.Error())
	}
}

// NewRelay returns an alive relay named label whose descriptor, published
// at t, is the i-th of a network: address 127.(i/250).(i%250).1, every
// other relay an exit, bandwidth growing with i.
func NewRelay(label string, i int, t time.Time) *Relay {
	k := Key(label)
	policy := directory.RejectAllPolicy()
	if i%2 == 0 {
		var err error
		policy, err = directory.ParseExitPolicy("reject private:*, accept *:80, accept *:443, reject *:*")
		must(err)
	}
	d := &directory.Descriptor{
		Nickname:   fmt.Sprintf("r%d", i),
		Identity:   k.Public().(ed25519.PublicKey),
		Address:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(1 + i/250), byte(i % 250), 1}), 9001),
		Bandwidth:  int64(100<<10 + (i%64)*(256<<10)),
		ExitPolicy: policy,
		Platform:   "veil dirtest",
		Published:  t,
		OnionKeyPQ: PQKey(label),
	}
	lk := sha256.Sum256([]byte("link " + label))
	ok := sha256.Sum256([]byte("onion " + label))
	d.LinkKey, d.OnionKey = lk, ok
	return &Relay{Key: k, Desc: d, Alive: true}
}

// PQKey returns a deterministic directory.OnionKeyPQSize-byte key (only
// its length is checked by package directory).
func PQKey(label string) []byte {
	out := make([]byte, 0, directory.OnionKeyPQSize+sha256.Size)
	for i := 0; len(out) < directory.OnionKeyPQSize; i++ {
		h := sha256.Sum256([]byte(fmt.Sprint("pq ", label, i)))
		out = append(out, h[:]...)
	}
	return out[:directory.OnionKeyPQSize]
}

// Signed returns r's descriptor signed with its key.
func (r *Relay) Signed() []byte {
	raw, err := r.Desc.Sign(r.Key)
	must(err)
	return raw
}

// Upload gives every relay's current descriptor to every online
// authority, at Now.
func (n *Net) Upload() {
	for _, r := range n.Relays {
		raw := r.Signed()
		for i, a := range n.Auths {
			if n.Online[i] {
				_, err := a.AddDescriptor(raw, n.Now)
				must(err)
			}
		}
	}
}

// alive reports whether the relay at t answers.
func (n *Net) alive(t directory.ReachabilityTarget) bool {
	for _, r := range n.Relays {
		if r.ID() == t.ID {
			return r.Alive && r.Desc.Address == t.Address && r.Desc.LinkKey == t.LinkKey
		}
	}
	return false
}

// Test has every online authority test every relay due at Now.
func (n *Net) Test() {
	for i, a := range n.Auths {
		if !n.Online[i] {
			continue
		}
		for _, t := range a.ReachabilityTargets(n.Now) {
			a.RecordReachability(t, n.alive(t), n.Now)
		}
	}
}

// Round runs the next voting round: the clock moves to its vote time
// (relays are tested, votes made and delivered among online
// authorities), then its signature time (consensus computed, signed, and
// signatures delivered), then valid-after. It returns the round and each
// authority's published consensus document (nil for an offline authority
// or when it could not publish).
func (n *Net) Round() (time.Time, [][]byte) {
	va := Schedule.NextRound(n.Now)
	n.Now = Schedule.VoteTime(va)
	n.Test()
	var votes [][]byte
	for i, a := range n.Auths {
		if !n.Online[i] {
			continue
		}
		v, err := a.MakeVote(va, n.Now)
		must(err)
		votes = append(votes, v)
	}
	n.deliver(votes, func(a *directory.Authority, b []byte) error { _, err := a.AddVote(b, n.Now); return err })
	n.Now = Schedule.SigTime(va)
	var sigs [][]byte
	for i, a := range n.Auths {
		if !n.Online[i] {
			continue
		}
		if s, err := a.SignConsensus(va); err == nil {
			sigs = append(sigs, s)
		}
	}
	n.deliver(sigs, func(a *directory.Authority, b []byte) error { _, err := a.AddSignature(b, n.Now); return err })
	n.Now = va
	docs := make([][]byte, len(n.Auths))
	for i, a := range n.Auths {
		if n.Online[i] {
			docs[i], _, _ = a.Assemble(va)
		}
	}
	return va, docs
}

// deliver gives every document to every online authority (its own
// included, which is a no-op).
func (n *Net) deliver(docs [][]byte, add func(*directory.Authority, []byte) error) {
	for _, d := range docs {
		for i, a := range n.Auths {
			if n.Online[i] {
				if err := add(a, d); err != nil {
					panic(fmt.Sprintf("dirtest: authority %d refused a document: %v", i, err))
				}
			}
		}
	}
}
