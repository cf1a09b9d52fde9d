// Package linkio is the real driver for links: it runs the link handshake
// and framing of package circuit over a net.Conn, with a reader that hands
// each cell to a callback and a writer goroutine that batches queued cells
// into large Noise frames (one write per frame, up to 127 cells: per-cell
// syscalls cost more than all the crypto, DEPENDENCIES.md).
package linkio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
)

// Timeouts and limits.
const (
	HandshakeTimeout = 10 * time.Second
	// QueueCells bounds the cells waiting to be written on one link. Relays
	// queue per circuit above this (relay/sched.go) and clients are paced
	// by congestion control, so a small queue suffices; it is preallocated
	// (about 130 KiB per link), so it must stay small.
	QueueCells = 256
	// StalledWrite is how long Send waits for room in a full queue before
	// declaring the peer stalled and closing the link.
	StalledWrite = 30 * time.Second
)

var (
	// ErrClosed is returned by Send on a closed link.
	ErrClosed = errors.New("linkio: link closed")
	// ErrStalled is returned when the peer stopped reading.
	ErrStalled = errors.New("linkio: peer stopped reading")
)

// Conn is an established link.
type Conn struct {
	nc         net.Conn
	send, recv *circuit.FrameCipher
	peerStatic [32]byte
	initiator  bool

	queue     chan circuit.Cell
	closeOnce sync.Once
	closed    chan struct{}
	writerErr error
	writerEnd chan struct{}
}

// Dial opens a link to addr and authenticates the relay holding the link
// key peer. local is the relay's own link key, or a fresh throwaway key
// for a client.
func Dial(ctx context.Context, d *net.Dialer, addr string, local *crypto.StaticKey, peer [32]byte, rand io.Reader) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	hs, msg1, err := circuit.NewLinkInitiator(rand, local, peer)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if err := writeMsg(nc, msg1); err != nil {
		nc.Close()
		return nil, err
	}
	if err := runHandshake(nc, hs); err != nil {
		nc.Close()
		return nil, err
	}
	return start(nc, hs.Keys(), true)
}

// Accept runs the responder's handshake on an accepted connection.
func Accept(nc net.Conn, local *crypto.StaticKey, rand io.Reader) (*Conn, error) {
	nc.SetDeadline(time.Now().Add(HandshakeTimeout))
	hs, err := circuit.NewLinkResponder(rand, local)
	if err == nil {
		err = runHandshake(nc, hs)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return start(nc, hs.Keys(), false)
}

func runHandshake(nc net.Conn, hs *circuit.LinkHandshake) error {
	for hs.Keys() == nil {
		want := hs.ExpectedSize()
		msg, err := readMsg(nc, want)
		if err != nil {
			return err
		}
		reply, err := hs.ReadMessage(msg)
		if err != nil {
			return err
		}
		if reply != nil {
			if err := writeMsg(nc, reply); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeMsg(w io.Writer, msg []byte) error {
	buf := make([]byte, circuit.FrameHeaderSize+len(msg))
	buf[0], buf[1] = byte(len(msg)>>8), byte(len(msg))
	copy(buf[2:], msg)
	_, err := w.Write(buf)
	return err
}

func readMsg(r io.Reader, want int) ([]byte, error) {
	var hdr [circuit.FrameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if n := int(hdr[0])<<8 | int(hdr[1]); n != want {
		return nil, fmt.Errorf("%w: message of %d bytes, want %d", circuit.ErrLinkHandshake, n, want)
	}
	msg := make([]byte, want)
	_, err := io.ReadFull(r, msg)
	return msg, err
}

func start(nc net.Conn, keys *circuit.LinkKeys, initiator bool) (*Conn, error) {
	send, err := circuit.NewFrameCipher(keys.Send)
	if err != nil {
		nc.Close()
		return nil, err
	}
	recv, err := circuit.NewFrameCipher(keys.Recv)
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c := &Conn{
		nc: nc, send: send, recv: recv, peerStatic: keys.PeerStatic, initiator: initiator,
		queue: make(chan circuit.Cell, QueueCells), closed: make(chan struct{}), writerEnd: make(chan struct{}),
	}
	go c.writeLoop()
	return c, nil
}

// PeerStatic is the initiator's static key as seen by a responder (a relay's
// link key or a client's throwaway key); for an initiator, the peer's link key.
func (c *Conn) PeerStatic() [32]byte { return c.peerStatic }

// Initiator reports whether this side opened the link; it picks circuit IDs
// with circuit.CircIDHighBit set.
func (c *Conn) Initiator() bool { return c.initiator }

// RemoteAddr is the peer's address (for limits; never logged at Info).
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Send queues a cell. It blocks while the queue is full, up to StalledWrite,
// after which the link is closed: a peer that stops reading must not make
// us buffer without bound.
func (c *Conn) Send(cell *circuit.Cell) error {
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	select {
	case c.queue <- *cell:
		return nil
	case <-c.closed:
		return ErrClosed
	default:
	}
	t := time.NewTimer(StalledWrite)
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

func (c *Conn) writeLoop() {
	defer close(c.writerEnd)
	buf := make([]byte, circuit.MaxFramedSize)
	for {
		var cell circuit.Cell
		select {
		case cell = <-c.queue:
		case <-c.closed:
			return
		}
		n := 0
		for {
			cell.Encode(buf[circuit.FrameHeaderSize+n : circuit.FrameHeaderSize+n+circuit.CellSize])
			n += circuit.CellSize
			if n == circuit.MaxCellsPerFrame*circuit.CellSize {
				break
			}
			var more bool
			select {
			case cell, more = <-c.queue:
			default:
			}
			if !more {
				break
			}
		}
		frame, err := c.send.SealFrame(buf, n)
		if err == nil {
			_, err = c.nc.Write(frame)
		}
		if err != nil {
			c.writerErr = err
			c.Close()
			return
		}
	}
}

// ReadLoop reads frames until the link fails or is closed, calling handle
// for each cell in order. The cell is only valid during the call. A handle
// error closes the link. ReadLoop closes the link before returning.
func (c *Conn) ReadLoop(handle func(*circuit.Cell) error) error {
	defer c.Close()
	buf := make([]byte, circuit.MaxFrameSize)
	var hdr [circuit.FrameHeaderSize]byte
	var cell circuit.Cell
	for {
		if _, err := io.ReadFull(c.nc, hdr[:]); err != nil {
			return err
		}
		n, err := circuit.FrameLength(hdr[:])
		if err != nil {
			return err
		}
		if _, err := io.ReadFull(c.nc, buf[:n]); err != nil {
			return err
		}
		pt, err := c.recv.OpenFrame(buf[:n])
		if err != nil {
			return err
		}
		for off := 0; off < len(pt); off += circuit.CellSize {
			if err := circuit.DecodeCell(pt[off:off+circuit.CellSize], &cell); err != nil {
				return err
			}
			if cell.Cmd == circuit.CmdPadding {
				continue
			}
			if err := handle(&cell); err != nil {
				return err
			}
		}
	}
}

// Close closes the link; queued cells not yet written are dropped.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.nc.Close()
	})
	return nil
}

// Done is closed when the link is closed.
func (c *Conn) Done() <-chan struct{} { return c.closed }

// SendPadding queues one PADDING cell, which the peer discards. Links may
// send them to blur traffic patterns; the padding schedule is a policy
// above this package.
func (c *Conn) SendPadding() error {
	cell := circuit.Cell{Cmd: circuit.CmdPadding}
	return c.Send(&cell)
}
