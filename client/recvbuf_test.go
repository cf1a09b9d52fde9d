package client

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestRecvBuf pushes cells of random sizes (empty ones too) and takes them
// with reads of random sizes, checking the bytes, the count of cells each
// read finished, and that a drained buffer holds no block.
func TestRecvBuf(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var q recvBuf
	var want []byte // bytes pushed and not yet taken
	var lens []int  // unread bytes of each pushed cell
	for round := range 2000 {
		for range rng.IntN(40) {
			cell := make([]byte, rng.IntN(499))
			if rng.IntN(20) == 0 {
				cell = cell[:0]
			}
			for i := range cell {
				cell[i] = byte(rng.Uint32())
			}
			q.push(cell)
			want = append(want, cell...)
			lens = append(lens, len(cell))
			clear(cell) // the buffer must have copied it
		}
		p := make([]byte, rng.IntN(70000))
		n, cells := q.take(p)
		if n != min(len(p), len(want)) || !bytes.Equal(p[:n], want[:n]) {
			t.Fatalf("round %d: took %d bytes (%d pending, room for %d), or the wrong ones", round, n, len(want), len(p))
		}
		want = want[n:]
		finished, left := 0, n
		for len(lens) > 0 && left >= lens[0] {
			left -= lens[0]
			lens = lens[1:]
			finished++
		}
		if len(lens) > 0 {
			lens[0] -= left
		}
		if cells != finished {
			t.Fatalf("round %d: take reported %d cells finished, want %d", round, cells, finished)
		}
		if q.pending() != (len(lens) > 0) {
			t.Fatalf("round %d: pending %v with %d cells unread", round, q.pending(), len(lens))
		}
		if !q.pending() && len(q.blocks) != 0 {
			t.Fatalf("round %d: a drained buffer holds %d blocks", round, len(q.blocks))
		}
	}
}
