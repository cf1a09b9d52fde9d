package linkio

import (
	"sync"
	"time"

	"github.com/veilnet/veil/circuit"
)

// BatchFrames is how many full frames one Batch holds: one WriteBatch is
// one system call of up to BatchFrames*MaxFramedSize bytes (about 131 KB).
const BatchFrames = 2

// BatchCells is the most cells one Batch holds.
const BatchCells = BatchFrames * circuit.MaxCellsPerFrame

// Batch is a buffer of cells laid out as consecutive transport frames, so
// they can be sealed in place and written at once: cell i goes to frame
// i/MaxCellsPerFrame, and every frame but the last is full, so the frames
// are contiguous on the wire.
//
//	+-----+---------------------+-----+-----+------------------+-----+
//	| len | cells 0..126        | tag | len | cells 127..      | tag |
//	+-----+---------------------+-----+-----+------------------+-----+
//
// A Batch is owned by one goroutine; it allocates nothing after NewBatch.
type Batch struct {
	buf   []byte
	cells int
}

// NewBatch returns an empty Batch.
func NewBatch() *Batch {
	return &Batch{buf: make([]byte, BatchFrames*circuit.MaxFramedSize)}
}

// Len is the number of cells in b.
func (b *Batch) Len() int { return b.cells }

// Full reports whether b has room for no more cells.
func (b *Batch) Full() bool { return b.cells == BatchCells }

// Reset empties b.
func (b *Batch) Reset() { b.cells = 0 }

// Next returns the CellSize bytes where the next cell is to be encoded
// (circuit.Cell.Encode), or nil if b is full.
func (b *Batch) Next() []byte {
	if b.cells == BatchCells {
		return nil
	}
	f, i := b.cells/circuit.MaxCellsPerFrame, b.cells%circuit.MaxCellsPerFrame
	off := f*circuit.MaxFramedSize + circuit.FrameHeaderSize + i*circuit.CellSize
	b.cells++
	return b.buf[off : off+circuit.CellSize]
}

// Add encodes c as the next cell; it reports false if b is full.
func (b *Batch) Add(c *circuit.Cell) bool {
	dst := b.Next()
	if dst == nil {
		return false
	}
	c.Encode(dst)
	return true
}

// WriteBatch seals b's frames in place and writes them in one call, then
// empties b. It is safe to call from several goroutines (and alongside
// Send and TryWriteBatch); each call's frames stay together on the wire,
// after anything a TryWriteBatch left. A peer that does not take the
// bytes within StalledWrite loses the link; any write error closes the
// link. An empty b writes only what a TryWriteBatch left.
func (c *Conn) WriteBatch(b *Batch) error {
	defer b.Reset()
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.flushTailLocked(); err != nil {
		return err
	}
	if b.cells == 0 {
		return nil
	}
	buf, err := c.sealBatch(b)
	if err != nil {
		return err
	}
	return c.writeLocked(buf)
}

// TryWriteBatch is WriteBatch for a caller that must never wait (a relay's
// link reader writing another link's cells itself, relay/sched.go): it
// seals b's frames and writes what the socket takes at once, then empties
// b. Whatever the socket did not take stays in the Conn, in order, and
// complete is false: a goroutine that may wait must then call WriteBatch
// (or FlushTail) to write it. Nothing else is written before it. A
// connection without a file descriptor (net.Pipe in tests) keeps all of
// it. Errors close the link, as WriteBatch's do.
func (c *Conn) TryWriteBatch(b *Batch) (complete bool, err error) {
	defer b.Reset()
	select {
	case <-c.closed:
		return false, ErrClosed
	default:
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if b.cells == 0 {
		return c.tail == nil, nil
	}
	buf, err := c.sealBatch(b)
	if err != nil {
		return false, err
	}
	n := 0
	if c.tail == nil && c.raw != nil {
		n, err = c.raw.writeNow(buf)
		if err != nil {
			c.Close()
			return false, err
		}
	}
	if n == len(buf) {
		return true, nil
	}
	if c.tail == nil {
		c.tail = tailPool.Get().(*[]byte)
	}
	*c.tail = append(*c.tail, buf[n:]...)
	c.tailLen.Store(int64(len(*c.tail)))
	return false, nil
}

// HasTail reports whether a TryWriteBatch left bytes for WriteBatch or
// FlushTail.
func (c *Conn) HasTail() bool { return c.tailLen.Load() > 0 }

// FlushTail writes what TryWriteBatch left, waiting as WriteBatch does.
func (c *Conn) FlushTail() error { return c.WriteBatch(&Batch{}) }

// tailPool holds the buffers of unwritten tails: a link holds one only
// while its peer is slower than its writers.
var tailPool = sync.Pool{New: func() any {
	b := make([]byte, 0, BatchFrames*circuit.MaxFramedSize)
	return &b
}}

// sealBatch seals b's frames in place and returns the bytes to write.
// c.wmu is held; an error closes the link.
func (c *Conn) sealBatch(b *Batch) ([]byte, error) {
	end := 0
	for left, f := b.cells, 0; left > 0; f++ {
		n := min(left, circuit.MaxCellsPerFrame)
		frame, err := c.send.SealFrame(b.buf[f*circuit.MaxFramedSize:(f+1)*circuit.MaxFramedSize], n*circuit.CellSize)
		if err != nil {
			c.Close()
			return nil, err
		}
		end = f*circuit.MaxFramedSize + len(frame)
		left -= n
	}
	return b.buf[:end], nil
}

// flushTailLocked writes what TryWriteBatch left. c.wmu is held.
func (c *Conn) flushTailLocked() error {
	if c.tail == nil {
		return nil
	}
	t := c.tail
	c.tail = nil
	c.tailLen.Store(0)
	err := c.writeLocked(*t)
	*t = (*t)[:0]
	tailPool.Put(t)
	return err
}

// writeLocked writes buf, waiting up to StalledWrite. c.wmu is held; an
// error closes the link.
func (c *Conn) writeLocked(buf []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(stallTimeout))
	if _, err := c.nc.Write(buf); err != nil {
		c.Close()
		if isTimeout(err) {
			return ErrStalled
		}
		return err
	}
	return nil
}

func isTimeout(err error) bool {
	t, ok := err.(interface{ Timeout() bool })
	return ok && t.Timeout()
}

// Send queues a cell for the link's writer goroutine, which batches queued
// cells into frames. It blocks while the queue is full, up to StalledWrite,
// after which the link is closed: a peer that stops reading must not make
// us buffer without bound.
func (c *Conn) Send(cell *circuit.Cell) error {
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	c.startWriter.Do(func() {
		c.queue = make(chan circuit.Cell, QueueCells)
		go c.writeLoop()
	})
	select {
	case c.queue <- *cell:
		return nil
	case <-c.closed:
		return ErrClosed
	default:
	}
	t := time.NewTimer(stallTimeout)
	defer t.Stop()
	select {
	case c.queue <- *cell:
		return nil
	case <-c.closed:
		return ErrClosed
	case <-t.C:
		c.Close()
		return ErrStalled
	}
}

// writeLoop is Send's writer: it takes whatever is queued (up to one
// Batch) and writes it at once.
func (c *Conn) writeLoop() {
	b := NewBatch()
	for {
		var cell circuit.Cell
		select {
		case cell = <-c.queue:
		case <-c.closed:
			return
		}
		for more := true; more; {
			b.Add(&cell)
			if b.Full() {
				break
			}
			select {
			case cell, more = <-c.queue:
			default:
				more = false
			}
		}
		if c.WriteBatch(b) != nil {
			return
		}
	}
}

// SendPadding queues one PADDING cell, which the peer discards. Links may
// send them to blur traffic patterns; the padding schedule is a policy
// above this package.
func (c *Conn) SendPadding() error {
	cell := circuit.Cell{Cmd: circuit.CmdPadding}
	return c.Send(&cell)
}
