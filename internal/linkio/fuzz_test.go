package linkio

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

// chunkConn is a net.Conn whose reads return data in the sizes given by
// sizes (cycled), the way TCP may split a stream anywhere.
type chunkConn struct {
	net.Conn // nil: only the methods below are used
	data     []byte
	sizes    []byte
	i        int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.sizes) > 0 {
		n = min(n, 1+int(c.sizes[c.i%len(c.sizes)])*int(c.sizes[c.i%len(c.sizes)]))
		c.i++
	}
	n = copy(p, c.data[:min(n, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}
func (c *chunkConn) Close() error                   { return nil }
func (c *chunkConn) SetDeadline(time.Time) error    { return nil }
func (c *chunkConn) RemoteAddr() net.Addr           { return &net.TCPAddr{} }
func (*chunkConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzReadBatches feeds ReadBatches a valid stream of frames (frame sizes
// from frameSizes), split into reads of arbitrary sizes, followed by
// arbitrary trailing bytes. Invariants: no panic; every cell of the valid
// frames is handed over once and in order, whatever the split; flush
// comes only after cells; the loop ends with an error (EOF or a bad
// frame), never by itself.
func FuzzReadBatches(f *testing.F) {
	f.Add(uint16(300), []byte{127, 127, 46}, []byte{255, 3, 7}, []byte{})
	f.Add(uint16(1), []byte{1}, []byte{0}, []byte{0, 2, 1, 2, 3})
	f.Add(uint16(0), []byte{}, []byte{}, []byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, ncells uint16, frameSizes, readSizes, trailer []byte) {
		n := int(ncells % 1000)
		key := [32]byte{9}
		send, _ := circuit.NewFrameCipher(key)
		var stream []byte
		buf := make([]byte, circuit.MaxFramedSize)
		for sent, k := 0, 0; sent < n; k++ {
			m := n - sent
			if len(frameSizes) > 0 {
				m = min(m, 1+int(frameSizes[k%len(frameSizes)])%circuit.MaxCellsPerFrame)
			}
			m = min(m, circuit.MaxCellsPerFrame)
			for i := range m {
				c := circuit.Cell{CircID: uint32(sent + i + 1), Cmd: circuit.CmdRelay}
				c.Encode(buf[circuit.FrameHeaderSize+i*circuit.CellSize:])
			}
			frame, err := send.SealFrame(buf, m*circuit.CellSize)
			if err != nil {
				t.Fatal(err)
			}
			stream = append(stream, frame...)
			sent += m
		}
		stream = append(stream, trailer...)
		c, err := start(&chunkConn{data: stream, sizes: readSizes}, &circuit.LinkKeys{Send: key, Recv: key}, false)
		if err != nil {
			t.Fatal(err)
		}
		next, pending := uint32(1), 0
		err = c.ReadBatches(func(cell *circuit.Cell) error {
			if int(next) <= n && cell.CircID != next {
				t.Fatalf("cell %d arrived as %d", next, cell.CircID)
			}
			next++
			pending++
			return nil
		}, func() error {
			if pending == 0 {
				t.Fatal("flush without cells")
			}
			pending = 0
			return nil
		})
		if err == nil {
			t.Fatal("ReadBatches returned without an error")
		}
		if int(next)-1 < n {
			t.Fatalf("%d of %d cells handed over (%v)", next-1, n, err)
		}
		if len(trailer) == 0 && !errors.Is(err, io.EOF) {
			t.Fatalf("clean stream ended with %v", err)
		}
	})
}
