package directory

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// benchRelays is the scale of the benchmarks: about Tor's network.
const benchRelays = 7000

type benchState struct {
	net   *Network
	keys  []*Signer
	va    time.Time
	votes []*Vote
	doc   []byte // the assembled consensus, signed by every authority
}

var (
	benchOnce sync.Once
	bench     benchState
)

// benchSetup runs one round of 5 authorities that all hold benchRelays
// descriptors (built once per process).
func benchSetup(b *testing.B) *benchState {
	benchOnce.Do(func() {
		net, keys := testNetwork(5)
		va := testSchedule.NextRound(testTime)
		voteAt := testSchedule.VoteTime(va)
		exit, _ := ParseExitPolicy("reject private:*, accept *:80, accept *:443, accept *:8080-8090, reject *:*")
		var raws [][]byte
		for i := range benchRelays {
			seed := sha256.Sum256(fmt.Appendf(nil, "bench relay %d", i))
			priv := ed25519.NewKeyFromSeed(seed[:])
			d := &Descriptor{
				Nickname:   fmt.Sprintf("relay%d", i),
				Address:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), 9001),
				Bandwidth:  int64(50<<10 + (i*7919)%(50<<20)),
				Platform:   "veil 0.1",
				Published:  voteAt.Add(-time.Hour),
				OnionKeyPQ: testPQKey(i),
				ExitPolicy: RejectAllPolicy(),
			}
			d.LinkKey, d.OnionKey = sha256.Sum256(seed[:1]), sha256.Sum256(seed[1:2])
			d.LinkKey[2], d.LinkKey[3] = byte(i), byte(i>>8)
			if i%5 == 0 {
				d.ExitPolicy = exit
			}
			raw, err := d.Sign(priv)
			if err != nil {
				panic(err)
			}
			raws = append(raws, raw)
		}
		var votes []*Vote
		for _, k := range keys {
			a, err := newAuth(net, k)
			if err != nil {
				panic(err)
			}
			for _, raw := range raws {
				if _, err := a.AddDescriptor(raw, voteAt); err != nil {
					panic(err)
				}
			}
			markReachable(a, voteAt)
			raw, err := a.MakeVote(va, voteAt)
			if err != nil {
				panic(err)
			}
			v, err := ParseVote(raw)
			if err != nil {
				panic(err)
			}
			votes = append(votes, v)
		}
		bench = benchState{net: net, keys: keys, va: va, votes: votes}
		c, err := ComputeConsensus(net, testSchedule, va, votes)
		if err != nil {
			panic(err)
		}
		body := c.encodeBody()
		d := sha256Digest(body)
		var sigs []ConsensusSignature
		for _, k := range keys {
			sigs = append(sigs, SignDigest(k, d))
		}
		bench.doc = encodeSigned(body, sigs)
	})
	return &bench
}

// BenchmarkConsensusCompute: one authority computes the consensus of 5
// votes of benchRelays relays each, encodes it and signs its digest.
func BenchmarkConsensusCompute(b *testing.B) {
	s := benchSetup(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c, err := ComputeConsensus(s.net, testSchedule, s.va, s.votes)
		if err != nil {
			b.Fatal(err)
		}
		SignDigest(s.keys[0], sha256Digest(c.encodeBody()))
	}
}

// BenchmarkConsensusVerify: a client parses and verifies the consensus
// (5 signatures) and indexes it: looks up every relay by ID and sums the
// bandwidth weights of the guard position. It reports the document's
// size raw and gzip-compressed.
func BenchmarkConsensusVerify(b *testing.B) {
	s := benchSetup(b)
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	zw.Write(s.doc)
	zw.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c, err := VerifyConsensus(s.doc, s.net, s.va)
		if err != nil {
			b.Fatal(err)
		}
		var total int64
		for i := range c.Relays {
			r := c.Relay(c.Relays[i].ID)
			total += r.Bandwidth * c.Weights.ForPosition(r, 'g')
		}
		if len(c.Relays) != benchRelays || total == 0 {
			b.Fatalf("%d relays", len(c.Relays))
		}
	}
	b.ReportMetric(float64(len(s.doc)), "raw-bytes")
	b.ReportMetric(float64(z.Len()), "gzip-bytes")
}
