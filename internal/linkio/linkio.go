// Package linkio is the real driver for links: it runs the link handshake
// and framing of package circuit over a net.Conn.
//
// Reading (read.go): one goroutine per link reads as many bytes as the
// socket has into one frame-sized buffer, opens each frame in place and
// hands each cell to a callback, then calls a flush callback once per
// read, so the caller can wake its writers once per batch of cells rather
// than once per cell.
//
// Writing (write.go), two ways: WriteBatch seals a caller-filled Batch
// of up to several full frames in place and writes them in one system
// call (a relay's per-link scheduler does this itself: no hand-off to
// another goroutine); Send queues single cells for a writer goroutine
// that batches them into frames (clients and tests). Per-cell syscalls
// cost more than all the crypto (DEPENDENCIES.md): batch.
package linkio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
)

// Timeouts and limits.
const (
	HandshakeTimeout = 10 * time.Second
	// QueueCells bounds the cells waiting for Send's writer on one link.
	// Relays do not use it (they queue per circuit, relay/sched.go, and
	// write with WriteBatch) and clients are paced by congestion control,
	// so a small queue suffices; it is allocated on the first Send (about
	// 130 KiB), so it must stay small.
	QueueCells = 256
	// StalledWrite is how long Send waits for room in a full queue, and a
	// write may take, before the peer is declared stalled and the link
	// closed.
	StalledWrite = 30 * time.Second
)

// stallTimeout is StalledWrite; tests shorten it.
var stallTimeout = StalledWrite

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

	// wmu serializes writers: it guards send (whose frame counter
	// must follow the order of bytes on the wire), nc's writes and tail.
	wmu sync.Mutex
	// raw writes to nc's socket without waiting, when nc has one (TCP):
	// TryWriteBatch uses it (write.go).
	raw *rawWriter
	// tail holds sealed bytes that a TryWriteBatch could not write at
	// once; they go out first on the next WriteBatch or FlushTail.
	// tailLen mirrors len(tail) for HasTail's lock-free read.
	tail    *[]byte // from tailPool; nil when empty
	tailLen atomic.Int64

	// The queue and writer goroutine behind Send start on first use: a
	// relay writes through WriteBatch from its own scheduler and never
	// pays for them.
	startWriter sync.Once
	queue       chan circuit.Cell

	closeOnce sync.Once
	closed    chan struct{}
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
	c := &Conn{nc: nc, send: send, recv: recv, peerStatic: keys.PeerStatic, initiator: initiator, closed: make(chan struct{})}
	c.raw = newRawWriter(nc)
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
