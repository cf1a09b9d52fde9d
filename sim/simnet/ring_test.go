package simnet

import (
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

// TestRingsReusedIntact: pipes that fill, grow, empty and hand their rings
// to other pipes (the pool) still deliver every cell, in order, with its
// payload intact.
func TestRingsReusedIntact(t *testing.T) {
	s, n, a, b, ra, rb := twoNodes(t, Config{Latency: [][]time.Duration{{5 * time.Millisecond}}, Jitter: 0.5}, 0)
	var ab *Link
	n.Dial(a, b, func(l *Link, err error) { ab = l })
	s.Run(Epoch.Add(time.Second))
	got := map[*recorder][]byte{}
	rb.onCell = func(c *circuit.Cell) { got[rb] = append(got[rb], c.Payload[0]) }
	ra.onCell = func(c *circuit.Cell) { got[ra] = append(got[ra], c.Payload[0]) }
	var want []byte
	for burst := range 6 {
		// Bursts of growing size in both directions: each empties its
		// pipe, so the next takes a ring another pipe gave back.
		for i := range 10 << burst {
			c := circuit.Cell{CircID: 1, Cmd: circuit.CmdRelay}
			c.Payload[0] = byte(i*7 + burst)
			c.Payload[circuit.PayloadSize-1] = c.Payload[0]
			want = append(want, c.Payload[0])
			ab.Send(a, &c)
			ab.Send(b, &c)
		}
		s.Run(s.Now().Add(time.Second))
	}
	for _, r := range []*recorder{ra, rb} {
		if string(got[r]) != string(want) {
			t.Fatalf("delivered %d cells, want %d, or out of order / changed", len(got[r]), len(want))
		}
	}
	if ab.dir[0].buf != nil || ab.dir[1].buf != nil {
		t.Error("empty pipes kept their rings")
	}
}
