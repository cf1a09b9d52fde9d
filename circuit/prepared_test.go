package circuit

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

// Handshakes prepared for every hop before the first CREATE build the same
// working circuit; a prepared handshake is bound to its position and is
// used at most once.
func TestPreparedHops(t *testing.T) {
	ch := &chain{t: t, client: NewClientCircuit(time.Now)}
	var prepared []*PreparedHop
	for i := range 3 {
		r := newTestRelay(t, i+1)
		ch.relays = append(ch.relays, r)
		p, err := PrepareHop(rand.Reader, r.spec, i+1)
		if err != nil {
			t.Fatal(err)
		}
		prepared = append(prepared, p)
	}
	if _, err := ch.client.CreatePrepared(rand.Reader, prepared[1]); !errors.Is(err, ErrProtocol) {
		t.Fatalf("CREATE with a handshake prepared for hop 2: %v, want ErrProtocol", err)
	}
	payloads, err := ch.client.CreatePrepared(rand.Reader, prepared[0])
	if err != nil {
		t.Fatal(err)
	}
	ch.acceptFirst(payloads)
	if err := ch.client.ExtendPrepared(prepared[2], &ch.ca); !errors.Is(err, ErrProtocol) {
		t.Fatalf("hop 2 with a handshake prepared for hop 3: %v, want ErrProtocol", err)
	}
	if len(ch.ca.ToLink) != 0 {
		t.Fatal("a refused extend emitted cells")
	}
	for i := 1; i < 3; i++ {
		ch.extend(i, func() error { return ch.client.ExtendPrepared(prepared[i], &ch.ca) })
	}
	if got := ch.client.Hops(); got != 3 {
		t.Fatalf("%d hops built, want 3", got)
	}
	// Used once: the same handshake cannot start another circuit's hop.
	other := NewClientCircuit(time.Now)
	if _, err := other.CreatePrepared(rand.Reader, prepared[0]); !errors.Is(err, ErrProtocol) {
		t.Fatalf("reusing a prepared handshake: %v, want ErrProtocol", err)
	}
	// The circuit carries a stream end to end.
	ch.ca.Reset()
	id, err := ch.client.OpenStream("example.com", 80, &ch.ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.sendForward(); err != nil {
		t.Fatal(err)
	}
	if len(ch.ra.Begins) != 1 || ch.ra.Begins[0].StreamID != id {
		t.Fatalf("the exit saw begins %+v, want stream %d", ch.ra.Begins, id)
	}
}
