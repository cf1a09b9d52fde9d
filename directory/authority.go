package directory

import (
	"bytes"
	"fmt"
	"sort"
	"time"
)

// maxRounds bounds the rounds an Authority keeps state for. The window
// of inWindow admits at most four aligned rounds at any time.
const maxRounds = 8

// Authority is the sans-IO voting logic of one directory authority: it
// holds the descriptors relays uploaded, the votes and detached
// signatures of each round, and the consensus it computed. A driver
// (relay/authority) calls it on its schedule and on each received
// document, passing the time in.
//
// An Authority is not safe for concurrent use.
type Authority struct {
	net      *Network
	sched    Schedule
	signer   *Signer
	params   Params
	badExits map[RelayID]bool
	self     int
	descs    map[RelayID]heldDescriptor
	reach    map[RelayID]*reachState
	rounds   map[int64]*round
	testing  bool // TestingAllFlags
}

// AuthorityConfig configures the voting logic of one authority.
type AuthorityConfig struct {
	Network  *Network
	Schedule Schedule
	// Signer signs votes and consensus signatures; its certificate's
	// identity must be in Network.
	Signer *Signer
	// Params are the consensus parameters this authority proposes.
	Params Params
	// BadExits are relays this authority's operator judged unfit to be
	// exits; it votes BadExit for them.
	BadExits []RelayID
	// TestingAllFlags votes Fast, Stable, Guard and HSDir for every
	// Running relay, as Tor's TestingDirAuthVoteGuard does: a private test
	// network whose relays are all young would otherwise give Guard to
	// only the older half, forever. Never for a real network.
	TestingAllFlags bool
}

type heldDescriptor struct {
	raw []byte
	d   *Descriptor
}

// round is the state of one voting round, indexed by authority position
// in the network file.
type round struct {
	va       time.Time
	votes    []*Vote
	rawVotes [][]byte
	sigs     []*DetachedSignature
	rawSigs  [][]byte
	cons     *Consensus
	body     []byte
	digest   Digest
}

// NewAuthority returns the voting logic of the authority of cfg.Network
// whose signer is cfg.Signer. The signer's certificate must pass
// Cert.Check for the network at some time (it is checked again at every
// use by the peers); here only the identity and the PQ match are checked.
func NewAuthority(cfg AuthorityConfig) (*Authority, error) {
	net := cfg.Network
	if net == nil || cfg.Signer == nil {
		return nil, fmt.Errorf("%w: network and signer are required", ErrInvalidField)
	}
	if err := net.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Schedule.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Params.Validate(); err != nil {
		return nil, err
	}
	self, err := cfg.Signer.Cert.Check(net, cfg.Signer.Cert.Published)
	if err != nil {
		if self < 0 {
			return nil, fmt.Errorf("%w: this authority's identity is not in the network file", ErrUnknownAuthority)
		}
		return nil, err
	}
	a := &Authority{
		net: net, sched: cfg.Schedule, signer: cfg.Signer, params: cfg.Params, self: self,
		badExits: map[RelayID]bool{},
		testing:  cfg.TestingAllFlags,
		descs:    map[RelayID]heldDescriptor{},
		reach:    map[RelayID]*reachState{},
		rounds:   map[int64]*round{},
	}
	for _, id := range cfg.BadExits {
		a.badExits[id] = true
	}
	return a, nil
}

// Network returns the network file the authority was created with.
func (a *Authority) Network() *Network { return a.net }

// Self returns this authority's position in the network file.
func (a *Authority) Self() int { return a.self }

// Descriptors returns the number of descriptors held.
func (a *Authority) Descriptors() int { return len(a.descs) }

// AddDescriptor verifies a signed descriptor (ParseDescriptor at now) and
// keeps it if it is the newest from its relay. Uploading the descriptor
// already held again succeeds; an older or equally old different one
// fails with ErrStaleDescriptor. A new relay beyond MaxRelays held fails
// with ErrTooManyRelays. raw is copied.
func (a *Authority) AddDescriptor(raw []byte, now time.Time) (*Descriptor, error) {
	d, err := ParseDescriptor(raw, now)
	if err != nil {
		return nil, err
	}
	id := d.ID()
	if h, ok := a.descs[id]; ok {
		if bytes.Equal(h.raw, raw) {
			return h.d, nil
		}
		if !d.Published.After(h.d.Published) {
			return nil, ErrStaleDescriptor
		}
	} else if len(a.descs) >= MaxRelays {
		a.pruneDescriptors(now)
		if len(a.descs) >= MaxRelays {
			return nil, ErrTooManyRelays
		}
	}
	a.descs[id] = heldDescriptor{raw: bytes.Clone(raw), d: d}
	return d, nil
}

// pruneDescriptors drops descriptors outside their lifetime at now, and
// their reachability state.
func (a *Authority) pruneDescriptors(now time.Time) {
	for id, h := range a.descs {
		if h.d.checkTime(now) != nil {
			delete(a.descs, id)
			delete(a.reach, id)
		}
	}
}

// round returns the state of round va, creating it if create is set and
// va is acceptable at now.
func (a *Authority) round(va, now time.Time, create bool) (*round, error) {
	if r := a.rounds[va.Unix()]; r != nil && r.va.Equal(va) {
		return r, nil
	}
	if !create {
		return nil, ErrWrongRound
	}
	if !a.sched.inWindow(va, now) {
		return nil, ErrWrongRound
	}
	for k, r := range a.rounds {
		if r.va.Before(now.Add(-3 * a.sched.Interval)) {
			delete(a.rounds, k)
		}
	}
	if len(a.rounds) >= maxRounds {
		return nil, ErrWrongRound
	}
	n := len(a.net.Authorities)
	r := &round{
		va:    va.UTC(),
		votes: make([]*Vote, n), rawVotes: make([][]byte, n),
		sigs: make([]*DetachedSignature, n), rawSigs: make([][]byte, n),
	}
	a.rounds[va.Unix()] = r
	return r, nil
}

// MakeVote makes this authority's vote for round va at time now (which
// must not be after va), listing every held descriptor within its
// lifetime with the flags assignFlags gives it, and the parameters this
// authority proposes; it keeps it as this authority's vote. Calling it
// again for the same round returns the same vote.
func (a *Authority) MakeVote(va, now time.Time) ([]byte, error) {
	r, err := a.round(va, now, true)
	if err != nil {
		return nil, err
	}
	if raw := r.rawVotes[a.self]; raw != nil {
		return raw, nil
	}
	published := now.UTC().Truncate(time.Second)
	a.pruneDescriptors(published)
	v := &Vote{
		Network:    a.net.Name,
		Published:  published,
		ValidAfter: r.va,
		FreshUntil: a.sched.FreshUntil(r.va),
		ValidUntil: a.sched.ValidUntil(r.va),
		Params:     a.params,
	}
	flags := a.assignFlags(published)
	for id, h := range a.descs {
		v.Entries = append(v.Entries, VoteEntry{Raw: h.raw, Descriptor: h.d, Digest: DescriptorDigest(h.raw), Flags: flags[id]})
	}
	sort.Slice(v.Entries, func(i, j int) bool {
		x, y := v.Entries[i].Descriptor.ID(), v.Entries[j].Descriptor.ID()
		return bytes.Compare(x[:], y[:]) < 0
	})
	raw, err := v.Sign(a.signer)
	if err != nil {
		return nil, err
	}
	r.votes[a.self], r.rawVotes[a.self] = v, raw
	return raw, nil
}

// AddVote verifies a peer's vote (ParseVote) and keeps it. The vote must
// be for this network, carry a certificate that passes Cert.Check at now,
// follow the schedule, and be for a round acceptable at now. A second, different
// vote from one authority for one round fails with ErrConflict; the same
// vote again succeeds. It returns the index of the voting authority.
func (a *Authority) AddVote(raw []byte, now time.Time) (int, error) {
	v, err := ParseVote(raw)
	if err != nil {
		return -1, err
	}
	if v.Network != a.net.Name {
		return -1, ErrWrongNetwork
	}
	i, err := v.Cert.Check(a.net, now)
	if err != nil {
		return i, err
	}
	if !v.FreshUntil.Equal(a.sched.FreshUntil(v.ValidAfter)) || !v.ValidUntil.Equal(a.sched.ValidUntil(v.ValidAfter)) {
		return i, fmt.Errorf("%w: vote does not follow the voting schedule", ErrWrongRound)
	}
	r, err := a.round(v.ValidAfter, now, true)
	if err != nil {
		return i, err
	}
	if old := r.rawVotes[i]; old != nil {
		if bytes.Equal(old, raw) {
			return i, nil
		}
		return i, ErrConflict
	}
	r.votes[i], r.rawVotes[i] = v, bytes.Clone(raw)
	return i, nil
}

// Vote returns the vote of the authority at index i for round va, or nil.
func (a *Authority) Vote(va time.Time, i int) []byte {
	r := a.rounds[va.Unix()]
	if r == nil || i < 0 || i >= len(r.rawVotes) || !r.va.Equal(va) {
		return nil
	}
	return r.rawVotes[i]
}

// MissingVotes returns the indexes of the authorities whose vote for
// round va is not held.
func (a *Authority) MissingVotes(va time.Time) []int {
	return missing(a.rounds[va.Unix()], len(a.net.Authorities), func(r *round, i int) bool { return r.votes[i] != nil })
}

// MissingSignatures returns the indexes of the authorities whose
// detached signature for round va is not held.
func (a *Authority) MissingSignatures(va time.Time) []int {
	return missing(a.rounds[va.Unix()], len(a.net.Authorities), func(r *round, i int) bool { return r.sigs[i] != nil })
}

func missing(r *round, n int, held func(*round, int) bool) []int {
	var out []int
	for i := 0; i < n; i++ {
		if r == nil || !held(r, i) {
			out = append(out, i)
		}
	}
	return out
}

// ComputeConsensus fixes the consensus of round va from the votes held
// now (ComputeConsensus) and returns its digest. Once it has succeeded
// for a round, later calls return the same digest and later votes no
// longer change it. It fails with ErrNotEnoughVotes while no more than
// half of the authorities' votes are held.
func (a *Authority) ComputeConsensus(va time.Time) (Digest, error) {
	r := a.rounds[va.Unix()]
	if r == nil || !r.va.Equal(va) {
		return Digest{}, ErrWrongRound
	}
	if r.cons != nil {
		return r.digest, nil
	}
	var votes []*Vote
	for _, v := range r.votes {
		if v != nil {
			votes = append(votes, v)
		}
	}
	c, err := ComputeConsensus(a.net, a.sched, va, votes)
	if err != nil {
		return Digest{}, err
	}
	r.cons, r.body = c, c.encodeBody()
	r.digest = sha256Digest(r.body)
	return r.digest, nil
}

// Consensus returns the consensus computed for round va, or nil.
func (a *Authority) Consensus(va time.Time) *Consensus {
	if r := a.rounds[va.Unix()]; r != nil && r.va.Equal(va) {
		return r.cons
	}
	return nil
}

// SignConsensus computes round va's consensus if needed, signs its digest
// and keeps the signature; it returns the detached signature document to
// send to the peers.
func (a *Authority) SignConsensus(va time.Time) ([]byte, error) {
	d, err := a.ComputeConsensus(va)
	if err != nil {
		return nil, err
	}
	r := a.rounds[va.Unix()]
	if raw := r.rawSigs[a.self]; raw != nil {
		return raw, nil
	}
	s := &DetachedSignature{
		Network:            a.net.Name,
		ValidAfter:         r.va,
		Digest:             d,
		ConsensusSignature: SignDigest(a.signer, d),
	}
	r.sigs[a.self], r.rawSigs[a.self] = s, s.Encode()
	return r.rawSigs[a.self], nil
}

// AddSignature verifies a peer's detached signature (ParseSignature) and
// keeps it if its certificate passes Cert.Check at now and it is for a
// round acceptable at now. It may arrive before this authority computed its own
// consensus; only signatures over the same digest count in Assemble. A
// second, different signature from one authority for one round fails with
// ErrConflict. It returns the signer's index.
func (a *Authority) AddSignature(raw []byte, now time.Time) (int, error) {
	s, err := ParseSignature(raw)
	if err != nil {
		return -1, err
	}
	if s.Network != a.net.Name {
		return -1, ErrWrongNetwork
	}
	i, err := s.Cert.Check(a.net, now)
	if err != nil {
		return i, err
	}
	r, err := a.round(s.ValidAfter, now, true)
	if err != nil {
		return i, err
	}
	if old := r.rawSigs[i]; old != nil {
		if bytes.Equal(old, raw) {
			return i, nil
		}
		return i, ErrConflict
	}
	r.sigs[i], r.rawSigs[i] = s, bytes.Clone(raw)
	return i, nil
}

// Signature returns the detached signature of the authority at index i
// for round va, or nil.
func (a *Authority) Signature(va time.Time, i int) []byte {
	r := a.rounds[va.Unix()]
	if r == nil || i < 0 || i >= len(r.rawSigs) || !r.va.Equal(va) {
		return nil
	}
	return r.rawSigs[i]
}

// Assemble returns round va's consensus document with every held
// signature over this authority's digest, sorted by authority key, and
// the number of signatures. It fails with ErrNotEnoughSignatures unless
// more than half of the network's authorities signed: only then may the
// document be published.
func (a *Authority) Assemble(va time.Time) ([]byte, int, error) {
	r := a.rounds[va.Unix()]
	if r == nil || !r.va.Equal(va) || r.cons == nil {
		return nil, 0, ErrNoConsensus
	}
	var sigs []ConsensusSignature
	for _, s := range r.sigs {
		if s != nil && s.Digest == r.digest {
			sigs = append(sigs, s.ConsensusSignature)
		}
	}
	sort.Slice(sigs, func(i, j int) bool { return bytes.Compare(sigs[i].Authority, sigs[j].Authority) < 0 })
	if len(sigs) < a.net.Quorum() {
		return nil, len(sigs), ErrNotEnoughSignatures
	}
	return encodeSigned(r.body, sigs), len(sigs), nil
}
