package directory

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestMajorityMembership(t *testing.T) {
	net, keys := testNetwork(3)
	var raws [][]byte
	for n := 0; n < 3; n++ {
		d, priv := testDescriptor(t, n)
		raws = append(raws, signDescriptor(t, d, priv))
	}
	// relay0 is known to all three, relay1 to two, relay2 to one.
	uploads := [][][]byte{{raws[0], raws[1], raws[2]}, {raws[0], raws[1]}, {raws[0]}}
	auths, va := testRound(t, net, keys, uploads)
	signAll(t, auths, va)
	checkGolden(t, "vote.txt", auths[1].Vote(va, 1))

	var docs [][]byte
	for _, a := range auths {
		doc, n, err := a.Assemble(va)
		if err != nil || n != 3 {
			t.Fatalf("Assemble: %d signatures, %v", n, err)
		}
		docs = append(docs, doc)
	}
	for _, doc := range docs[1:] {
		if !bytes.Equal(doc, docs[0]) {
			t.Fatal("authorities holding the same votes produced different consensus documents")
		}
	}
	c, err := VerifyConsensus(docs[0], net, va)
	if err != nil {
		t.Fatalf("VerifyConsensus: %v", err)
	}
	want := map[RelayID]bool{}
	for n := 0; n < 2; n++ {
		d, _ := testDescriptor(t, n)
		want[d.ID()] = true
	}
	if len(c.Relays) != 2 {
		t.Fatalf("consensus lists %d relays, want 2 (relay0 and relay1)", len(c.Relays))
	}
	for _, r := range c.Relays {
		if !want[r.ID] {
			t.Errorf("relay %s listed though only one authority voted for it", r.Nickname)
		}
		if !r.Flags.Has(FlagRunning | FlagValid) {
			t.Errorf("relay %s lacks Running/Valid: %v", r.Nickname, r.Flags)
		}
	}
	d2, _ := testDescriptor(t, 2)
	if c.Relay(d2.ID()) != nil {
		t.Error("Relay() found the relay that only one authority voted for")
	}
	d0, _ := testDescriptor(t, 0)
	r0 := c.Relay(d0.ID())
	if r0 == nil || !r0.Flags.Has(FlagExit) || r0.Address != d0.Address || r0.OnionKey != d0.OnionKey {
		t.Errorf("relay0 entry wrong: %+v", r0)
	}
	d1, _ := testDescriptor(t, 1)
	if r1 := c.Relay(d1.ID()); r1 == nil || r1.Flags.Has(FlagExit) {
		t.Errorf("relay1 (reject *:*) should be listed without Exit: %+v", r1)
	}
}

func TestMajorityOfAllAuthoritiesNotOfVoters(t *testing.T) {
	// Only two of three authorities vote; a relay in one of those two
	// votes is still a minority of the network.
	net, keys := testNetwork(3)
	d0, p0 := testDescriptor(t, 0)
	d1, p1 := testDescriptor(t, 1)
	r0, r1 := signDescriptor(t, d0, p0), signDescriptor(t, d1, p1)
	auths, va := testRound(t, net, keys[:2], [][][]byte{{r0, r1}, {r0}})
	if _, err := auths[0].ComputeConsensus(va); err != nil {
		t.Fatalf("ComputeConsensus with 2 of 3 votes: %v", err)
	}
	c := auths[0].Consensus(va)
	if len(c.Relays) != 1 || c.Relays[0].ID != d0.ID() {
		t.Fatalf("want only relay0, got %d relays", len(c.Relays))
	}

	lone, va2 := testRound(t, net, keys[:1], [][][]byte{{r0}})
	if _, err := lone[0].ComputeConsensus(va2); !errors.Is(err, ErrNotEnoughVotes) {
		t.Fatalf("1 of 3 votes: got %v, want ErrNotEnoughVotes", err)
	}
}

func TestDescriptorDisagreement(t *testing.T) {
	net, keys := testNetwork(3)
	d, priv := testDescriptor(t, 0)
	d.Bandwidth = 100
	old := signDescriptor(t, d, priv)
	d.Bandwidth = 500
	d.Published = d.Published.Add(10 * time.Second)
	newer := signDescriptor(t, d, priv)
	d.Bandwidth = 900
	d.Published = d.Published.Add(10 * time.Second)
	newest := signDescriptor(t, d, priv)

	// Two votes carry "newer", one "old": the majority descriptor wins;
	// the bandwidth is the median 500.
	auths, va := testRound(t, net, keys, [][][]byte{{old}, {newer}, {newer}})
	if _, err := auths[0].ComputeConsensus(va); err != nil {
		t.Fatal(err)
	}
	r := auths[0].Consensus(va).Relays[0]
	if r.Digest != DescriptorDigest(newer) || r.Bandwidth != 500 {
		t.Errorf("majority descriptor: got bandwidth %d, digest match %v", r.Bandwidth, r.Digest == DescriptorDigest(newer))
	}
	// One vote each: the newest wins; the bandwidth is the median 500.
	auths, va = testRound(t, net, keys, [][][]byte{{old}, {newer}, {newest}})
	if _, err := auths[0].ComputeConsensus(va); err != nil {
		t.Fatal(err)
	}
	r = auths[0].Consensus(va).Relays[0]
	if r.Digest != DescriptorDigest(newest) || r.Bandwidth != 500 {
		t.Errorf("tie: got bandwidth %d, newest chosen %v", r.Bandwidth, r.Digest == DescriptorDigest(newest))
	}
}

func TestAuthorityDescriptorRules(t *testing.T) {
	net, keys := testNetwork(3)
	a, err := newAuth(net, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	d, priv := testDescriptor(t, 0)
	first := signDescriptor(t, d, priv)
	if _, err := a.AddDescriptor(first, testTime); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddDescriptor(first, testTime); err != nil {
		t.Errorf("re-upload of the same descriptor: %v", err)
	}
	d.Bandwidth++
	same := signDescriptor(t, d, priv)
	if _, err := a.AddDescriptor(same, testTime); !errors.Is(err, ErrStaleDescriptor) {
		t.Errorf("different descriptor with the same published time: %v", err)
	}
	d.Published = d.Published.Add(time.Second)
	if _, err := a.AddDescriptor(signDescriptor(t, d, priv), testTime); err != nil {
		t.Errorf("newer descriptor: %v", err)
	}
	if _, err := a.AddDescriptor(first, testTime); !errors.Is(err, ErrStaleDescriptor) {
		t.Errorf("older descriptor after a newer one: %v", err)
	}
	if a.Descriptors() != 1 {
		t.Errorf("holding %d descriptors, want 1", a.Descriptors())
	}
	// A descriptor that expires between upload and vote is left out.
	va := testSchedule.NextRound(testTime.Add(DescriptorLifetime))
	vote, err := a.MakeVote(va, testSchedule.VoteTime(va))
	if err != nil {
		t.Fatal(err)
	}
	v, err := ParseVote(vote)
	if err != nil || len(v.Entries) != 0 {
		t.Errorf("vote after expiry lists %d descriptors (%v)", len(v.Entries), err)
	}
	if _, err := newAuth(net, testSigner("outsider")); !errors.Is(err, ErrUnknownAuthority) {
		t.Errorf("authority not in the network file: %v", err)
	}
}

func TestAddVoteRules(t *testing.T) {
	net, keys := testNetwork(3)
	d, priv := testDescriptor(t, 0)
	raw := signDescriptor(t, d, priv)
	auths, va := testRound(t, net, keys, [][][]byte{{raw}, {raw}, {}})
	voteAt := testSchedule.VoteTime(va)

	// A vote by a key outside the network file.
	outsiderNet, outsiderKeys := testNetwork(1)
	outsiderKeys[0] = testSigner("outsider")
	outsiderNet.Authorities[0].Identity = outsiderKeys[0].Cert.Identity
	outsider, err := newAuth(outsiderNet, outsiderKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	ov, _ := outsider.MakeVote(va, voteAt)
	if _, err := auths[0].AddVote(ov, voteAt); !errors.Is(err, ErrUnknownAuthority) {
		t.Errorf("outsider vote: %v", err)
	}
	// A second, different vote from authority 2 for the same round.
	other, _ := newAuth(net, keys[2])
	other.AddDescriptor(raw, voteAt)
	v2, err := other.MakeVote(va, voteAt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auths[0].AddVote(v2, voteAt); !errors.Is(err, ErrConflict) {
		t.Errorf("equivocating vote: %v", err)
	}
	// Resending the vote already held is fine.
	if _, err := auths[0].AddVote(auths[2].Vote(va, 2), voteAt); err != nil {
		t.Errorf("resent vote: %v", err)
	}
	// A vote for a round far from now.
	far, _ := newAuth(net, keys[1])
	fv, _ := far.MakeVote(va.Add(time.Hour), voteAt.Add(time.Hour))
	if _, err := auths[0].AddVote(fv, voteAt); !errors.Is(err, ErrWrongRound) {
		t.Errorf("vote for a far round: %v", err)
	}
	// A vote with a tampered byte.
	bad := bytes.Clone(auths[1].Vote(va, 1))
	bad[20] ^= 1
	if _, err := auths[0].AddVote(bad, voteAt); err == nil {
		t.Error("tampered vote accepted")
	}
	// A vote for another network.
	elsewhere := *net
	elsewhere.Name = "elsewhere"
	e, _ := newAuth(&elsewhere, keys[1])
	ev, _ := e.MakeVote(va, voteAt)
	if _, err := auths[0].AddVote(ev, voteAt); !errors.Is(err, ErrWrongNetwork) {
		t.Errorf("vote for another network: %v", err)
	}
	// Votes made after valid-after are refused at the source.
	if _, err := far.MakeVote(va, va.Add(time.Second)); err == nil {
		t.Error("MakeVote after valid-after succeeded")
	}
}

func TestAssembleNeedsMajority(t *testing.T) {
	net, keys := testNetwork(3)
	d, priv := testDescriptor(t, 0)
	raw := signDescriptor(t, d, priv)
	auths, va := testRound(t, net, keys, [][][]byte{{raw}, {raw}, {raw}})
	a := auths[0]
	if _, _, err := a.Assemble(va); !errors.Is(err, ErrNoConsensus) {
		t.Errorf("Assemble before computing: %v", err)
	}
	if _, err := a.SignConsensus(va); err != nil {
		t.Fatal(err)
	}
	if _, n, err := a.Assemble(va); !errors.Is(err, ErrNotEnoughSignatures) || n != 1 {
		t.Errorf("own signature only: %d, %v", n, err)
	}
	// A valid signature by authority 1 on a different digest does not count.
	wrong := &DetachedSignature{Network: net.Name, ValidAfter: va, Digest: Digest{9}, ConsensusSignature: SignDigest(keys[1], Digest{9})}
	if _, err := a.AddSignature(wrong.Encode(), va); err != nil {
		t.Fatalf("AddSignature: %v", err)
	}
	if _, n, err := a.Assemble(va); !errors.Is(err, ErrNotEnoughSignatures) || n != 1 {
		t.Errorf("signature on another digest counted: %d, %v", n, err)
	}
	s2, err := auths[2].SignConsensus(va)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddSignature(s2, va); err != nil {
		t.Fatal(err)
	}
	doc, n, err := a.Assemble(va)
	if err != nil || n != 2 {
		t.Fatalf("Assemble with 2 of 3: %d, %v", n, err)
	}
	if _, err := VerifyConsensus(doc, net, va); err != nil {
		t.Errorf("assembled consensus does not verify: %v", err)
	}
	// Authority 1's signature (on the wrong digest) is held, so nothing is
	// missing, and a second signature from it is a conflict.
	if _, err := a.AddSignature(mustSign(t, auths[1], va), va); !errors.Is(err, ErrConflict) {
		t.Errorf("second signature from one authority: %v", err)
	}
	if len(a.MissingSignatures(va)) != 0 || len(a.MissingVotes(va)) != 0 {
		t.Errorf("missing: sigs %v votes %v", a.MissingSignatures(va), a.MissingVotes(va))
	}
	outsider := &DetachedSignature{Network: net.Name, ValidAfter: va, Digest: Digest{9}, ConsensusSignature: SignDigest(testSigner("o"), Digest{9})}
	if _, err := a.AddSignature(outsider.Encode(), va); !errors.Is(err, ErrUnknownAuthority) {
		t.Errorf("outsider signature: %v", err)
	}
}

func TestScheduleTimes(t *testing.T) {
	s := testSchedule
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	// Interval 10s, delays 2s+2s: the round at :10 votes at :06.
	now := time.Date(2030, 1, 1, 0, 0, 5, 500, time.UTC)
	va := s.NextRound(now)
	if !s.Aligned(va) || s.VoteTime(va).Before(now) {
		t.Errorf("NextRound(%v) = %v", now, va)
	}
	if want := time.Date(2030, 1, 1, 0, 0, 10, 0, time.UTC); !va.Equal(want) {
		t.Errorf("NextRound = %v, want %v", va, want)
	}
	if got := s.NextRound(time.Date(2030, 1, 1, 0, 0, 6, 0, time.UTC)); !got.Equal(time.Date(2030, 1, 1, 0, 0, 10, 0, time.UTC)) {
		t.Errorf("vote time exactly now: %v", got)
	}
	if got := s.NextRound(time.Date(2030, 1, 1, 0, 0, 6, 1, time.UTC)); !got.Equal(time.Date(2030, 1, 1, 0, 0, 20, 0, time.UTC)) {
		t.Errorf("just past the vote time: %v", got)
	}
	for _, bad := range []Schedule{
		{Interval: 1500 * time.Millisecond, VoteDelay: 1, SigDelay: 1},
		{Interval: 10 * time.Second, VoteDelay: 5 * time.Second, SigDelay: 5 * time.Second},
		{Interval: 10 * time.Second, VoteDelay: 0, SigDelay: time.Second},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func mustSign(t *testing.T, a *Authority, va time.Time) []byte {
	t.Helper()
	s, err := a.SignConsensus(va)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
