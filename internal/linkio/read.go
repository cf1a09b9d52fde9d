package linkio

import (
	"github.com/veilnet/veil/circuit"
)

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
// frames in place.
func (c *Conn) ReadBatches(handle func(*circuit.Cell) error, flush func() error) error {
	defer c.Close()
	buf := make([]byte, circuit.MaxFramedSize)
	have := 0 // buf[:have] holds unread bytes, starting at a frame boundary
	var cell circuit.Cell
	for {
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
			return rerr
		}
	}
}
