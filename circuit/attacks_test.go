package circuit

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/veilnet/veil/crypto"
)

// cellsArriving has the client send n messages to the last hop and returns
// the cells as they arrive at hop `at` (0-based), passed honestly through
// the hops before it.
func (ch *chain) cellsArriving(t *testing.T, at int, n int) []Cell {
	t.Helper()
	ch.ca.Reset()
	for range n {
		if err := ch.client.emitForward(RelayMsg{Cmd: RelayDrop}); err != nil {
			t.Fatal(err)
		}
	}
	var out []Cell
	for _, c := range append([]Cell(nil), ch.ca.ToLink...) {
		for hop := range at {
			ch.ra.Reset()
			if err := ch.rcs[hop].HandleForward(&c.Payload, &ch.ra); err != nil {
				t.Fatal(err)
			}
			c = ch.ra.ToNext[0]
		}
		out = append(out, c)
	}
	return out
}

// TestForwardReplayDropReorderAtEachHop: a cell replayed, dropped or
// reordered on the way to any hop fails authentication at that hop, which
// (in the driver) destroys the circuit.
func TestForwardReplayDropReorderAtEachHop(t *testing.T) {
	mangles := map[string]func([]Cell) []Cell{
		"replay":  func(cs []Cell) []Cell { return append([]Cell{cs[0]}, cs...) },
		"drop":    func(cs []Cell) []Cell { return cs[1:] },
		"reorder": func(cs []Cell) []Cell { cs[0], cs[1] = cs[1], cs[0]; return cs },
	}
	for name, mangle := range mangles {
		for at := range 3 {
			ch := buildChain(t, 3)
			cells := mangle(ch.cellsArriving(t, at, 3))
			var err error
			for _, c := range cells {
				ch.ra.Reset()
				if err = ch.rcs[at].HandleForward(&c.Payload, &ch.ra); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("%s before hop %d: got %v, want ErrAuth", name, at+1, err)
			}
		}
	}
}

// TestBackwardTamperAtEachHop: a backward cell flipped on its way to any
// hop (or to the client) is detected by the client, since every hop's
// layer covers the bytes the next hop toward the client forwards.
func TestBackwardTamperAtEachHop(t *testing.T) {
	for into := -1; into <= 1; into++ { // -1: the link into the client
		ch, id := openedStream(t, 3)
		exit := ch.rcs[2]
		ch.ra.Reset()
		if _, err := exit.PackageData(id, []byte("payload"), &ch.ra); err != nil {
			t.Fatal(err)
		}
		c := ch.ra.ToPrev[0]
		var err error
		for hop := 1; hop >= -1; hop-- {
			if hop == into {
				c.Payload[11] ^= 0x80
			}
			if hop < 0 {
				ch.ca.Reset()
				err = ch.client.HandleBackward(&c.Payload, &ch.ca)
				break
			}
			ch.ra.Reset()
			if err = ch.rcs[hop].HandleBackward(&c.Payload, &ch.ra); err != nil {
				break
			}
			c = ch.ra.ToPrev[0]
		}
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("flip on the way into hop %d: got %v, want ErrAuth at the client", into+1, err)
		}
	}
}

func TestHybridHandshakeFailures(t *testing.T) {
	r := newTestRelay(t, 1)
	pub, err := ParseOnionPublic(r.onion.X25519.Public, r.onion.KEMPublic[:])
	if err != nil {
		t.Fatal(err)
	}
	_, msg1, err := NewHybridClientHandshake(rand.Reader, r.id, pub, 1)
	if err != nil {
		t.Fatal(err)
	}

	// Stale onion key: the relay rotated and no longer holds it.
	newer, _ := crypto.GenerateOnionKey(rand.Reader)
	if _, _, _, err := RespondHybridHandshake(rand.Reader, r.id, []*crypto.OnionKey{newer}, msg1); !errors.Is(err, ErrUnknownOnionKey) {
		t.Fatalf("stale onion key: %v", err)
	}
	// During the overlap the previous key still works.
	if _, _, _, err := RespondHybridHandshake(rand.Reader, r.id, []*crypto.OnionKey{newer, r.onion}, msg1); err != nil {
		t.Fatalf("previous onion key refused during overlap: %v", err)
	}
	// Wrong identity: the prologue binds the relay the client meant.
	if _, _, _, err := RespondHybridHandshake(rand.Reader, [32]byte{9}, []*crypto.OnionKey{r.onion}, msg1); !errors.Is(err, ErrHandshake) {
		t.Fatalf("wrong identity: %v", err)
	}
	// Truncated message, and a corrupted KEM ciphertext (implicit
	// rejection: the PSK differs, so the client's Finish must fail).
	if _, _, _, err := RespondHybridHandshake(rand.Reader, r.id, []*crypto.OnionKey{r.onion}, msg1[:len(msg1)-1]); !errors.Is(err, ErrHandshake) {
		t.Fatalf("truncated message 1: %v", err)
	}
	h, msg1, _ := NewHybridClientHandshake(rand.Reader, r.id, pub, 1)
	msg2, _, _, err := RespondHybridHandshake(rand.Reader, r.id, []*crypto.OnionKey{r.onion}, msg1)
	if err != nil {
		t.Fatal(err)
	}
	msg2[40] ^= 1
	if _, err := h.Finish(msg2); !errors.Is(err, ErrHandshake) {
		t.Fatalf("tampered message 2 accepted: %v", err)
	}
}

// TestTruncatedCreateFragments: a CREATE whose fragments stop early never
// completes, one that claims too much is refused, and AcceptCreate refuses
// a message of the wrong length.
func TestTruncatedCreateFragments(t *testing.T) {
	r := newTestRelay(t, 1)
	c := NewClientCircuit(time.Now)
	payloads, err := c.Create(rand.Reader, r.spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(payloads) < 2 {
		t.Fatalf("hybrid CREATE fits %d cell", len(payloads))
	}
	a, done, err := StartCreate(&payloads[0])
	if err != nil || done {
		t.Fatalf("first fragment: done=%v err=%v", done, err)
	}
	for _, p := range payloads[1 : len(payloads)-1] {
		if done, _ = a.Add(&p); done {
			t.Fatal("complete before the last fragment")
		}
	}
	ht, partial := a.Message()
	if _, _, err := AcceptCreate(rand.Reader, time.Now, r.id, []*crypto.OnionKey{r.onion}, ht, partial); !errors.Is(err, ErrHandshake) {
		t.Fatalf("partial handshake accepted: %v", err)
	}
	var huge [PayloadSize]byte
	huge[1], huge[2], huge[3] = byte(HandshakeHybrid), 0xff, 0xff
	if _, _, err := StartCreate(&huge); !errors.Is(err, ErrBadCell) {
		t.Fatalf("65535-byte handshake: %v", err)
	}
}
