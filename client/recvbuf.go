package client

import "sync"

// recvBuf holds a stream's received bytes until the application reads
// them. The bytes live in pooled blocks, so a busy stream copies each
// cell's data once and allocates nothing in steady state, and a drained
// stream holds no block. It remembers how much of each cell's data is
// still unread, so that a read can tell the circuit how many cells it
// consumed (XON/XOFF counts cells).
type recvBuf struct {
	blocks   []*recvBlock // blocks[head:] hold the unread bytes, in order
	head     int
	cellLens []uint16 // cellLens[lenHead:]: unread bytes of each cell
	lenHead  int
}

// recvBlockSize is the size of a receive block: 32 cells' data.
const recvBlockSize = 16 << 10

type recvBlock struct {
	b    [recvBlockSize]byte
	r, w int // b[r:w] is unread
}

var recvBlockPool = sync.Pool{New: func() any { return new(recvBlock) }}

// maxKeptCellLens bounds the cell-length array a drained buffer keeps.
const maxKeptCellLens = 1024

// pending reports whether bytes (or empty cells) wait to be read.
func (q *recvBuf) pending() bool { return q.lenHead < len(q.cellLens) }

// push appends one cell's data (copied: b may be reused by the caller).
func (q *recvBuf) push(b []byte) {
	cell := uint16(len(b))
	for len(b) > 0 {
		n := len(q.blocks)
		if n == q.head || q.blocks[n-1].w == recvBlockSize {
			t := recvBlockPool.Get().(*recvBlock)
			t.r, t.w = 0, 0
			if q.head > 0 && n == cap(q.blocks) { // move the live blocks down before growing
				n = copy(q.blocks, q.blocks[q.head:])
				clear(q.blocks[n:])
				q.blocks, q.head = q.blocks[:n], 0
			}
			q.blocks = append(q.blocks, t)
			n++
		}
		t := q.blocks[n-1]
		m := copy(t.b[t.w:], b)
		t.w += m
		b = b[m:]
	}
	if q.lenHead > 0 && len(q.cellLens) == cap(q.cellLens) {
		n := copy(q.cellLens, q.cellLens[q.lenHead:])
		q.cellLens, q.lenHead = q.cellLens[:n], 0
	}
	q.cellLens = append(q.cellLens, cell)
}

// take copies unread bytes into p; it returns how many, and how many
// cells' data it finished.
func (q *recvBuf) take(p []byte) (n, cells int) {
	for n < len(p) && q.head < len(q.blocks) {
		h := q.blocks[q.head]
		m := copy(p[n:], h.b[h.r:h.w])
		h.r += m
		n += m
		if h.r == h.w {
			recvBlockPool.Put(h)
			q.blocks[q.head] = nil
			q.head++
		}
	}
	for left := n; q.lenHead < len(q.cellLens); {
		l := int(q.cellLens[q.lenHead])
		if left < l {
			q.cellLens[q.lenHead] = uint16(l - left)
			break
		}
		left -= l
		q.lenHead++
		cells++
	}
	if !q.pending() {
		q.release()
	}
	return n, cells
}

// release gives the blocks back to the pool and forgets everything unread.
func (q *recvBuf) release() {
	for i := q.head; i < len(q.blocks); i++ {
		recvBlockPool.Put(q.blocks[i])
		q.blocks[i] = nil
	}
	q.blocks, q.head = q.blocks[:0], 0
	if cap(q.cellLens) > maxKeptCellLens {
		q.cellLens = nil
	}
	q.cellLens, q.lenHead = q.cellLens[:0], 0
}
