package linkio

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veilnet/veil/circuit"
)

// idleReadRelease is how long a link reader keeps its buffer through a
// quiet spell before giving it back (tests shorten it). Long enough that a
// link with traffic every few seconds keeps its buffer rather than
// churning the pool (a release costs a later allocation of 64 KiB).
var idleReadRelease = 10 * time.Second

// readBufs counts the read buffers link readers hold.
var readBufs atomic.Int64

// ReadBuffersHeld is the number of link readers holding a read buffer
// (MaxFramedSize bytes each): links that carried bytes within the last
// idleReadRelease (10 s) or hold part of a frame.
func ReadBuffersHeld() int64 { return readBufs.Load() }

func getReadBuf() *[]byte {
	readBufs.Add(1)
	return readBufPool.Get().(*[]byte)
}

func putReadBuf(bp *[]byte) {
	readBufs.Add(-1)
	readBufPool.Put(bp)
}

// readBufPool holds the read buffers of link readers, MaxFramedSize bytes
// each.
var readBufPool = sync.Pool{New: func() any {
	b := make([]byte, circuit.MaxFramedSize)
	return &b
}}

// ReadLoop reads frames until the link fails or is closed, calling handle
// for each cell in order. The cell is only valid during the call. A handle
// error closes the link. ReadLoop closes the link before returning.
func (c *Conn) ReadLoop(handle func(*circuit.Cell) error) error {
	return c.ReadBatches(handle, nil)
}

// ReadBatches is ReadLoop with a flush callback (may be nil), called after
// the cells of each read from the socket were handled: up to a frame's
// worth (127 cells) and often several frames at once. A caller that wakes
// other goroutines for the cells it handles can wake them once per batch
// in flush, which lets those goroutines take many cells per wake-up.
//
// The reader reads as much as the socket holds into one buffer of
// MaxFramedSize bytes (the largest frame fits), checks each frame's length
// header as soon as it has it (circuit.FrameLength: an impossible length
// closes the link before anything else is read), and opens complete
// frames in place. It borrows the buffer from a pool while bytes arrive;
// when the link has been quiet for idleReadRelease with no part of a frame
// held, it gives the buffer back and waits for the socket to become
// readable without one: an idle link holds no read buffer (a relay has
// thousands of links; 64 KiB each would add up), and a busy one does not
// churn the pool.
func (c *Conn) ReadBatches(handle func(*circuit.Cell) error, flush func() error) error {
	defer c.Close()
	rr := newRawReader(c.nc)
	release := idleReadRelease
	var bp *[]byte
	defer func() {
		if bp != nil {
			putReadBuf(bp)
		}
	}()
	have := 0 // buf[:have] holds unread bytes, starting at a frame boundary
	var cell circuit.Cell
	for {
		if bp == nil {
			// Idle: wait for bytes without a buffer.
			if rr != nil {
				if err := rr.wait(); err != nil {
					return err
				}
			}
			bp = getReadBuf()
		}
		buf := *bp
		if rr != nil {
			// Busy: the read itself waits, up to idleReadRelease.
			c.nc.SetReadDeadline(time.Now().Add(release))
		}
		n, rerr := c.nc.Read(buf[have:])
		have += n
		off, cells := 0, 0
		for have-off >= circuit.FrameHeaderSize {
			fl, err := circuit.FrameLength(buf[off : off+circuit.FrameHeaderSize])
			if err != nil {
				return err
			}
			start := off + circuit.FrameHeaderSize
			if have-start < fl {
				break // the rest of this frame is still to come
			}
			pt, err := c.recv.OpenFrame(buf[start : start+fl])
			if err != nil {
				return err
			}
			off = start + fl
			for p := 0; p < len(pt); p += circuit.CellSize {
				if err := circuit.DecodeCell(pt[p:p+circuit.CellSize], &cell); err != nil {
					return err
				}
				if cell.Cmd == circuit.CmdPadding {
					continue
				}
				cells++
				if err := handle(&cell); err != nil {
					return err
				}
			}
		}
		if cells > 0 && flush != nil {
			if err := flush(); err != nil {
				return err
			}
		}
		if off > 0 {
			have = copy(buf, buf[off:have])
		}
		if rerr != nil {
			if rr == nil || !errors.Is(rerr, os.ErrDeadlineExceeded) {
				return rerr
			}
			// Quiet for idleReadRelease: give the buffer back unless it
			// holds part of a frame (then keep reading into it).
			if have == 0 {
				putReadBuf(bp)
				bp = nil
				c.nc.SetReadDeadline(time.Time{}) // rr.wait waits without one
			}
		}
	}
}
