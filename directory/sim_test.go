package directory_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/directory/dirtest"
)

// published returns the first non-nil document and checks that every
// online authority published the same bytes.
func published(t *testing.T, docs [][]byte) []byte {
	t.Helper()
	var first []byte
	for _, d := range docs {
		if d == nil {
			continue
		}
		if first == nil {
			first = d
		} else if !bytes.Equal(first, d) {
			t.Fatal("authorities published different consensus documents")
		}
	}
	return first
}

func TestSimFiveAuthoritiesOneOffline(t *testing.T) {
	n := dirtest.New(5, 8, dirtest.Options{})
	n.Online[3] = false
	n.Upload()
	va, docs := n.Round()
	doc := published(t, docs)
	if doc == nil {
		t.Fatal("no consensus with 4 of 5 authorities up")
	}
	c, err := directory.VerifyConsensus(doc, n.Network, va)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Relays) != 8 {
		t.Fatalf("%d relays listed, want 8", len(c.Relays))
	}
	sc, _ := directory.ParseConsensus(doc)
	if len(sc.Signatures) != 4 {
		t.Errorf("%d signatures, want 4", len(sc.Signatures))
	}
	for _, r := range c.Relays {
		if !r.Flags.Has(directory.FlagRunning|directory.FlagValid|directory.FlagFast) || len(r.OnionKeyPQ) != directory.OnionKeyPQSize {
			t.Errorf("relay %s: flags %v", r.Nickname, r.Flags)
		}
	}
}

func TestSimTwoOfThreeOfflineNoConsensus(t *testing.T) {
	n := dirtest.New(3, 4, dirtest.Options{})
	n.Upload()
	if _, docs := n.Round(); published(t, docs) == nil {
		t.Fatal("no consensus with every authority up")
	}
	n.Online[1], n.Online[2] = false, false
	for range 3 {
		if _, docs := n.Round(); published(t, docs) != nil {
			t.Fatal("one authority of three published a consensus")
		}
	}
}

func TestSimMaliciousAuthorityCannotAddRelays(t *testing.T) {
	n := dirtest.New(5, 4, dirtest.Options{})
	n.Upload()
	// Authority 0 holds descriptors of relays that do not exist (valid
	// signatures by keys it made up) and claims they answered.
	var fakes []directory.RelayID
	for i := range 20 {
		r := dirtest.NewRelay("fake", 100+i, dirtest.Start)
		r.Key = dirtest.Key("fake" + string(rune('a'+i)))
		r.Desc.Identity = nil
		raw, err := r.Desc.Sign(r.Key)
		if err != nil {
			t.Fatal(err)
		}
		d, err := n.Auths[0].AddDescriptor(raw, n.Now)
		if err != nil {
			t.Fatal(err)
		}
		fakes = append(fakes, d.ID())
	}
	va, docs := n.Round()
	c, err := directory.VerifyConsensus(published(t, docs), n.Network, va)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range fakes {
		if c.Relay(id) != nil {
			t.Fatal("a relay only one authority voted for is in the consensus")
		}
	}
	if len(c.Relays) != 4 {
		t.Errorf("%d relays listed, want the 4 real ones", len(c.Relays))
	}
}

func TestSimDeadRelayLosesRunning(t *testing.T) {
	n := dirtest.New(3, 4, dirtest.Options{})
	n.Upload()
	va, docs := n.Round()
	c, err := directory.VerifyConsensus(published(t, docs), n.Network, va)
	if err != nil || c.Relay(n.Relays[2].ID()) == nil {
		t.Fatalf("relay 2 not listed at first: %v", err)
	}
	n.Relays[2].Alive = false
	gone := false
	for round := 1; round <= 2 && !gone; round++ {
		va, docs = n.Round()
		c, err = directory.VerifyConsensus(published(t, docs), n.Network, va)
		if err != nil {
			t.Fatal(err)
		}
		r := c.Relay(n.Relays[2].ID())
		gone = r == nil || !r.Flags.Has(directory.FlagRunning)
	}
	if !gone {
		t.Fatal("a relay that stopped answering is still Running after two periods")
	}
	if c.Relay(n.Relays[1].ID()) == nil {
		t.Error("a live relay was dropped")
	}
	// It comes back once it answers again.
	n.Relays[2].Alive = true
	va, docs = n.Round()
	if c, _ = directory.VerifyConsensus(published(t, docs), n.Network, va); c == nil || c.Relay(n.Relays[2].ID()) == nil {
		t.Error("a relay that answers again is not listed")
	}
}

func TestSimForgedAndReplayedConsensusRefused(t *testing.T) {
	n := dirtest.New(3, 4, dirtest.Options{})
	n.Upload()
	va, docs := n.Round()
	doc := published(t, docs)
	if _, err := directory.VerifyConsensus(doc, n.Network, va); err != nil {
		t.Fatal(err)
	}
	// Forged: a changed bandwidth.
	forged := bytes.Replace(doc, []byte("\nbandwidth "), []byte("\nbandwidth 9"), 1)
	if _, err := directory.VerifyConsensus(forged, n.Network, va); err == nil {
		t.Error("forged consensus accepted")
	}
	// Forged: one authority's signature repeated to look like a quorum.
	sc, err := directory.ParseConsensus(doc)
	if err != nil {
		t.Fatal(err)
	}
	sigs := doc[len(sc.Body):]
	first := sigs[:bytes.IndexByte(sigs, '\n')+1]
	dup := append(append(append([]byte{}, sc.Body...), first...), first...)
	if _, err := directory.VerifyConsensus(dup, n.Network, va); !errors.Is(err, directory.ErrNotEnoughSignatures) {
		t.Errorf("one signature twice: %v", err)
	}
	// Replayed: the same document after it expired.
	if _, err := directory.VerifyConsensus(doc, n.Network, va.Add(3*dirtest.Schedule.Interval+time.Second)); !errors.Is(err, directory.ErrExpired) {
		t.Errorf("replayed expired consensus: %v", err)
	}
}

func TestSimHybridSignatures(t *testing.T) {
	n := dirtest.New(3, 2, dirtest.Options{Hybrid: true})
	n.Upload()
	va, docs := n.Round()
	doc := published(t, docs)
	if doc == nil {
		t.Fatal("no hybrid consensus")
	}
	if _, err := directory.VerifyConsensus(doc, n.Network, va); err != nil {
		t.Fatal(err)
	}
	// Strip the ML-DSA part of every signature: refused.
	sc, err := directory.ParseConsensus(doc)
	if err != nil {
		t.Fatal(err)
	}
	var stripped bytes.Buffer
	stripped.Write(sc.Body)
	for _, line := range bytes.Split(doc[len(sc.Body):len(doc)-1], []byte("\n")) {
		f := bytes.Fields(line)
		stripped.Write(bytes.Join(f[:3], []byte(" ")))
		stripped.WriteByte('\n')
	}
	if _, err := directory.VerifyConsensus(stripped.Bytes(), n.Network, va); !errors.Is(err, directory.ErrNotEnoughSignatures) {
		t.Errorf("consensus without ML-DSA signatures on a hybrid network: %v", err)
	}
}
