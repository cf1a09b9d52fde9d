package circuit

import (
	"errors"
	"net/netip"
	"testing"
)

func TestConnectedCarriesAddress(t *testing.T) {
	ch := buildChain(t, 3)
	exit := ch.rcs[2]
	ch.ca.Reset()
	id, _ := ch.client.OpenStream("example.com", 443, &ch.ca)
	if err := ch.sendForward(); err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr("2001:db8::7")
	ch.ra.Reset()
	if err := exit.StreamConnected(id, want, &ch.ra); err != nil {
		t.Fatal(err)
	}
	if err := ch.afterRelay(2); err != nil {
		t.Fatal(err)
	}
	if got := ch.client.StreamAddr(id); got != want {
		t.Fatalf("client sees connected address %v, want %v", got, want)
	}
}

func TestResolveRoundTrip(t *testing.T) {
	ch := buildChain(t, 3)
	exit := ch.rcs[2]
	ch.ca.Reset()
	id, err := ch.client.Resolve("example.com", &ch.ca)
	if err != nil {
		t.Fatal(err)
	}
	cells := append([]Cell(nil), ch.ca.ToLink...)
	ch.ca.Reset()
	var reqs []ResolveRequest
	for _, c := range cells {
		for hop := range 3 {
			ch.ra.Reset()
			if err := ch.rcs[hop].HandleForward(&c.Payload, &ch.ra); err != nil {
				t.Fatal(err)
			}
			if hop < 2 {
				c = ch.ra.ToNext[0]
			}
		}
		reqs = append(reqs, ch.ra.Resolves...)
	}
	if len(reqs) != 1 || reqs[0].Host != "example.com" || reqs[0].ID != id {
		t.Fatalf("exit got %+v", reqs)
	}
	answer := []ResolvedAddr{{Addr: netip.MustParseAddr("192.0.2.1"), TTL: 60}, {Addr: netip.MustParseAddr("2001:db8::1"), TTL: 30}}
	ch.ra.Reset()
	if err := exit.Resolved(id, 0, answer, &ch.ra); err != nil {
		t.Fatal(err)
	}
	if err := ch.afterRelay(2); err != nil {
		t.Fatal(err)
	}
	if len(ch.ca.Resolved) != 1 || ch.ca.Resolved[0].ID != id || len(ch.ca.Resolved[0].Addrs) != 2 || ch.ca.Resolved[0].Addrs[1] != answer[1] {
		t.Fatalf("client got %+v", ch.ca.Resolved)
	}
	// A second answer to the same request is a protocol violation at the
	// client; the exit's state machine will not even send it.
	ch.ra.Reset()
	if err := exit.Resolved(id, 0, answer, &ch.ra); err != nil || len(ch.ra.ToPrev) != 0 {
		t.Fatalf("exit answered a finished request: %v, %d cells", err, len(ch.ra.ToPrev))
	}
}

// TestHalfClose: after the client's FIN the exit still sends; the exit
// learns the client finished; after both FINs the stream is gone; data
// after a FIN is refused.
func TestHalfClose(t *testing.T) {
	ch, id := openedStream(t, 2)
	exit := ch.rcs[1]
	ch.ca.Reset()
	if err := ch.client.FinishStream(id, &ch.ca); err != nil {
		t.Fatal(err)
	}
	if ch.client.CanPackage(id) {
		t.Fatal("client may still send after FIN")
	}
	cells := append([]Cell(nil), ch.ca.ToLink...)
	ch.ca.Reset()
	var finished []uint16
	for _, c := range cells {
		for hop := range 2 {
			ch.ra.Reset()
			if err := ch.rcs[hop].HandleForward(&c.Payload, &ch.ra); err != nil {
				t.Fatal(err)
			}
			if hop == 0 {
				c = ch.ra.ToNext[0]
			}
		}
		finished = append(finished, ch.ra.Finished...)
	}
	if len(finished) != 1 || finished[0] != id {
		t.Fatalf("exit saw FIN for %v", finished)
	}
	// The exit still sends.
	ch.ra.Reset()
	if n, err := exit.PackageData(id, []byte("response"), &ch.ra); err != nil || n != 8 {
		t.Fatalf("exit could not send after the client's FIN: %d, %v", n, err)
	}
	if err := exit.StreamFinished(id, &ch.ra); err != nil {
		t.Fatal(err)
	}
	if err := ch.afterRelay(1); err != nil {
		t.Fatal(err)
	}
	if len(ch.ca.Data) != 1 || string(ch.ca.Data[0].Data) != "response" || len(ch.ca.Finished) != 1 {
		t.Fatalf("client got data %+v finished %v", ch.ca.Data, ch.ca.Finished)
	}
	if ch.client.StreamCount() != 0 || len(exit.ep.streams) != 0 {
		t.Fatalf("streams left after both FINs: client %d exit %d", ch.client.StreamCount(), len(exit.ep.streams))
	}
}

func TestDataAfterFinRefused(t *testing.T) {
	ch, id := openedStream(t, 1)
	exit := ch.rcs[0]
	ch.ra.Reset()
	if err := exit.StreamFinished(id, &ch.ra); err != nil {
		t.Fatal(err)
	}
	ch.afterRelay(0)
	ch.ca.Reset()
	if err := ch.client.HandleBackward(forgeData(exit, id), &ch.ca); !errors.Is(err, ErrProtocol) {
		t.Fatalf("DATA after FIN: %v", err)
	}
}

// FuzzStreamCodecs: the CONNECTED, RESOLVE and RESOLVED decoders never
// panic, and what they accept re-encodes to the same bytes.
func FuzzStreamCodecs(f *testing.F) {
	d, _ := EncodeResolved(0, []ResolvedAddr{{Addr: netip.MustParseAddr("192.0.2.1"), TTL: 5}})
	f.Add(d)
	f.Add(EncodeConnected(netip.MustParseAddr("2001:db8::1")))
	r, _ := EncodeResolve("example.com")
	f.Add(r)
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, err := DecodeConnected(b); err == nil && string(EncodeConnected(a)) != string(b) {
			t.Fatalf("CONNECTED %x re-encodes differently", b)
		}
		if h, err := DecodeResolve(b); err == nil {
			again, _ := EncodeResolve(h)
			if string(again) != string(b) {
				t.Fatalf("RESOLVE %x re-encodes differently", b)
			}
		}
		if st, addrs, err := DecodeResolved(b); err == nil {
			again, err := EncodeResolved(st, addrs)
			if err != nil || string(again) != string(b) {
				t.Fatalf("RESOLVED %x re-encodes differently (%v)", b, err)
			}
		}
	})
}

// TestSendmeTriggerCellIsUnpredictable: the cell whose tag a SENDME must
// echo carries random padding, so a client that knows the data (say, a
// public file) still cannot compute the tag without receiving the cell.
func TestSendmeTriggerCellIsUnpredictable(t *testing.T) {
	var bodies [2][]byte
	for run := range 2 {
		ch, id := openedStream(t, 1)
		exit := ch.rcs[0]
		ch.ra.Reset()
		if _, err := exit.PackageData(id, make([]byte, SendmeInc*exit.MaxData()), &ch.ra); err != nil {
			t.Fatal(err)
		}
		c := ch.ra.ToPrev[SendmeInc-1]
		if _, err := ch.client.hops[0].openBackwardAt(&c.Payload, SendmeInc); err != nil {
			t.Fatal(err)
		}
		bodies[run] = append([]byte(nil), c.Payload[BodySize(1)-sendmePadSize:BodySize(1)]...)
	}
	if string(bodies[0]) == string(bodies[1]) || string(bodies[0]) == string(make([]byte, sendmePadSize)) {
		t.Fatalf("SENDME-triggering cells carry predictable padding: %x %x", bodies[0], bodies[1])
	}
}

// openBackwardAt opens a backward cell as the counter'th of its direction
// (counter from 1), for tests that inspect one cell out of a stream.
func (h *hopLayer) openBackwardAt(payload *[PayloadSize]byte, counter uint64) (byte, error) {
	saved := h.backward.counter
	h.backward.counter = counter
	flag, err := h.openBackward(payload)
	h.backward.counter = saved
	return flag, err
}

func TestCreateContinuations(t *testing.T) {
	for _, n := range []int{1, 505, 506, 1014, 1015, HybridMsg1Size, MaxHandshakeSize} {
		payloads, err := CreatePayloads(HandshakeHybrid, make([]byte, n))
		if err != nil {
			t.Fatal(err)
		}
		if got := CreateContinuations(&payloads[0]); got != len(payloads)-1 {
			t.Errorf("HLen %d: %d continuations, CreatePayloads made %d", n, got, len(payloads)-1)
		}
	}
	var huge [PayloadSize]byte
	huge[2], huge[3] = 0xff, 0xff
	if got := CreateContinuations(&huge); got != 4 {
		t.Errorf("oversized HLen: %d continuations, want the clamp's 4", got)
	}
}
