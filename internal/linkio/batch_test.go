package linkio

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

// pipePair returns two started links over net.Pipe, keyed as if a
// handshake had run (the handshake is tested over TCP elsewhere).
func pipePair(t *testing.T) (*Conn, *Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	ca, cb := startPair(t, a, b)
	return ca, cb, b
}

// startPair starts links over a and b, the two ends of one connection,
// keyed as if a handshake had run (a initiated).
func startPair(t *testing.T, a, b net.Conn) (*Conn, *Conn) {
	t.Helper()
	k1, k2 := [32]byte{1}, [32]byte{2}
	ca, err := start(a, &circuit.LinkKeys{Send: k1, Recv: k2}, true)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := start(b, &circuit.LinkKeys{Send: k2, Recv: k1}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

// TestWriteBatchFrames: a Batch of 300 cells goes out as full 127-cell
// frames and a last partial one; the reader hands every cell over in order
// and calls flush once per read, after the cells it read.
func TestWriteBatchFrames(t *testing.T) {
	c, s, _ := pipePair(t)
	const n = 300
	type ev struct {
		id    uint32
		flush bool
	}
	evs := make(chan ev, 2*n)
	go s.ReadBatches(func(cell *circuit.Cell) error { evs <- ev{id: cell.CircID}; return nil },
		func() error { evs <- ev{flush: true}; return nil })
	b := NewBatch()
	for i := uint32(1); i <= n; i++ {
		if b.Full() {
			if err := c.WriteBatch(b); err != nil {
				t.Fatal(err)
			}
		}
		if !b.Add(&circuit.Cell{CircID: i, Cmd: circuit.CmdRelay}) {
			t.Fatal("Add refused a cell in a batch that is not full")
		}
	}
	if b.Len() != n-BatchCells {
		t.Fatalf("batch holds %d cells, want %d", b.Len(), n-BatchCells)
	}
	if err := c.WriteBatch(b); err != nil {
		t.Fatal(err)
	}
	next, flushes, sinceFlush := uint32(1), 0, 0
	for next <= n {
		select {
		case e := <-evs:
			switch {
			case e.flush:
				if sinceFlush == 0 {
					t.Fatal("flush without cells")
				}
				flushes, sinceFlush = flushes+1, 0
			case e.id != next:
				t.Fatalf("cell %d arrived as %d", next, e.id)
			default:
				next, sinceFlush = next+1, sinceFlush+1
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cell %d never arrived", next)
		}
	}
	select {
	case e := <-evs:
		if !e.flush {
			t.Fatal("no flush after the last cells")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no flush after the last cells")
	}
	if flushes+1 > 3 {
		t.Fatalf("%d flushes for 3 frames", flushes+1)
	}
}

// TestWriteBatchWireLayout reads the raw bytes of one full Batch: two
// frames of 127 cells, each with its length header, written at once.
func TestWriteBatchWireLayout(t *testing.T) {
	c, _, raw := pipePair(t)
	b := NewBatch()
	for !b.Full() {
		b.Add(&circuit.Cell{CircID: 1, Cmd: circuit.CmdRelay})
	}
	go c.WriteBatch(b)
	for range BatchFrames {
		var hdr [circuit.FrameHeaderSize]byte
		if _, err := io.ReadFull(raw, hdr[:]); err != nil {
			t.Fatal(err)
		}
		if n := binary.BigEndian.Uint16(hdr[:]); n != circuit.MaxFrameSize {
			t.Fatalf("frame of %d bytes, want %d", n, circuit.MaxFrameSize)
		}
		if _, err := io.ReadFull(raw, make([]byte, circuit.MaxFrameSize)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteBatchStalledPeer: a peer that takes nothing loses the link
// after the stall timeout instead of blocking the writer forever.
func TestWriteBatchStalledPeer(t *testing.T) {
	old := stallTimeout
	stallTimeout = 50 * time.Millisecond
	defer func() { stallTimeout = old }()
	c, _, _ := pipePair(t) // nobody reads the other end
	b := NewBatch()
	b.Add(&circuit.Cell{CircID: 1, Cmd: circuit.CmdRelay})
	if err := c.WriteBatch(b); !errors.Is(err, ErrStalled) {
		t.Fatalf("WriteBatch to a stalled peer: %v, want ErrStalled", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("link not closed")
	}
	b.Add(&circuit.Cell{CircID: 1, Cmd: circuit.CmdRelay})
	if err := c.WriteBatch(b); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteBatch after close: %v", err)
	}
}
