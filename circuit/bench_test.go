package circuit

import (
	"crypto/rand"
	"testing"

	"github.com/veilnet/veil/crypto"
)

// TestRelayForwardingAllocatesNothing pins DESIGN.md's per-cell rule: a
// middle relay forwarding cells in both directions allocates nothing in
// steady state.
func TestRelayForwardingAllocatesNothing(t *testing.T) {
	ch := buildChain(t, 3)
	middle := ch.rcs[1]
	var a RelayActions
	var fwd, bwd Cell
	// Client-sealed forward cells and exit-sealed backward cells, prepared
	// outside the measured loop.
	const n = 200
	fwds := make([]Cell, n)
	bwds := make([]Cell, n)
	for i := range n {
		ch.client.hops[2].sealForward(&fwds[i].Payload, FlagLocal)
		ch.client.hops[1].sealForward(&fwds[i].Payload, FlagForward)
		ch.rcs[2].hop.sealBackward(&bwds[i].Payload, FlagLocal)
	}
	i := 0
	allocs := testing.AllocsPerRun(n-1, func() {
		a.Reset()
		fwd = fwds[i]
		if err := middle.HandleForward(&fwd.Payload, &a); err != nil {
			t.Fatal(err)
		}
		bwd = bwds[i]
		if err := middle.HandleBackward(&bwd.Payload, &a); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("forwarding allocates %v times per cell pair", allocs)
	}
}

func BenchmarkHandshakeClassicalClient(b *testing.B) {
	r := newTestRelay(b, 1)
	b.ReportAllocs()
	for b.Loop() {
		h, msg1, _ := NewClientHandshake(rand.Reader, r.id, r.onion.X25519.Public, 1)
		b.StopTimer()
		msg2, _, _, _ := RespondHandshake(rand.Reader, r.id, &r.onion.X25519, msg1)
		b.StartTimer()
		if _, err := h.Finish(msg2); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandshakeClassicalRelay(b *testing.B) {
	r := newTestRelay(b, 1)
	_, msg1, _ := NewClientHandshake(rand.Reader, r.id, r.onion.X25519.Public, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := RespondHandshake(rand.Reader, r.id, &r.onion.X25519, msg1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandshakeHybridClient(b *testing.B) {
	r := newTestRelay(b, 1)
	keys := []*crypto.OnionKey{r.onion}
	b.ReportAllocs()
	for b.Loop() {
		pub, _ := ParseOnionPublic(r.onion.X25519.Public, r.onion.KEMPublic[:])
		h, msg1, err := NewHybridClientHandshake(rand.Reader, r.id, pub, 1)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		msg2, _, _, _ := RespondHybridHandshake(rand.Reader, r.id, keys, msg1)
		b.StartTimer()
		if _, err := h.Finish(msg2); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandshakeHybridRelay(b *testing.B) {
	r := newTestRelay(b, 1)
	keys := []*crypto.OnionKey{r.onion}
	pub, _ := ParseOnionPublic(r.onion.X25519.Public, r.onion.KEMPublic[:])
	_, msg1, _ := NewHybridClientHandshake(rand.Reader, r.id, pub, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := RespondHybridHandshake(rand.Reader, r.id, keys, msg1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOneLayerRelayForward(b *testing.B) {
	ch := buildChain(b, 3)
	var a RelayActions
	cells := make([]Cell, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(cells)) * PayloadSize) // one op = 1024 cells
	for b.Loop() {
		b.StopTimer()
		for i := range cells {
			ch.client.hops[2].sealForward(&cells[i].Payload, FlagLocal)
			ch.client.hops[1].sealForward(&cells[i].Payload, FlagForward)
		}
		b.StartTimer()
		for i := range cells {
			a.Reset()
			ch.rcs[1].HandleForward(&cells[i].Payload, &a)
		}
	}
}

func BenchmarkLinkFrame127Cells(b *testing.B) {
	send, _ := NewFrameCipher([32]byte{1})
	recv, _ := NewFrameCipher([32]byte{1})
	buf := make([]byte, MaxFramedSize)
	n := MaxCellsPerFrame * CellSize
	b.ReportAllocs()
	b.SetBytes(int64(n))
	for b.Loop() {
		frame, _ := send.SealFrame(buf, n)
		if _, err := recv.OpenFrame(frame[FrameHeaderSize:]); err != nil {
			b.Fatal(err)
		}
	}
}
