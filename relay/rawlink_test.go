package relay

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
)

// rawLink is a link driven by the test itself over a net.Conn (the sans-IO
// handshake and frame cipher of package circuit, no linkio), so a load
// generator can seal frames ahead of time and write them later, and a
// sink can count frames without opening them.
type rawLink struct {
	nc         net.Conn
	br         *bufio.Reader
	send, recv *circuit.FrameCipher
	recvKey    [32]byte
	wbuf       []byte
	hdr        [circuit.FrameHeaderSize]byte
}

func rawMsg(w io.Writer, msg []byte) error {
	b := make([]byte, circuit.FrameHeaderSize+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	copy(b[circuit.FrameHeaderSize:], msg)
	_, err := w.Write(b)
	return err
}

func rawHandshake(nc net.Conn, br *bufio.Reader, hs *circuit.LinkHandshake) (*rawLink, error) {
	for hs.Keys() == nil {
		var hdr [circuit.FrameHeaderSize]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, err
		}
		msg := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(br, msg); err != nil {
			return nil, err
		}
		reply, err := hs.ReadMessage(msg)
		if err != nil {
			return nil, err
		}
		if reply != nil {
			if err := rawMsg(nc, reply); err != nil {
				return nil, err
			}
		}
	}
	keys := hs.Keys()
	send, _ := circuit.NewFrameCipher(keys.Send)
	recv, _ := circuit.NewFrameCipher(keys.Recv)
	return &rawLink{nc: nc, br: br, send: send, recv: recv, recvKey: keys.Recv, wbuf: make([]byte, circuit.MaxFramedSize)}, nil
}

// dialRawLink opens a client link (throwaway static key) from local.
func dialRawLink(local, addr string, peer [32]byte) (*rawLink, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	throwaway, _ := crypto.GenerateStaticKey(rand.Reader)
	hs, msg1, err := circuit.NewLinkInitiator(rand.Reader, &throwaway, peer)
	if err != nil {
		return nil, err
	}
	if err := rawMsg(nc, msg1); err != nil {
		return nil, err
	}
	return rawHandshake(nc, bufio.NewReaderSize(nc, 256<<10), hs)
}

// acceptRawLink answers a link as the holder of key.
func acceptRawLink(nc net.Conn, key *crypto.StaticKey) (*rawLink, error) {
	hs, err := circuit.NewLinkResponder(rand.Reader, key)
	if err != nil {
		return nil, err
	}
	return rawHandshake(nc, bufio.NewReaderSize(nc, 256<<10), hs)
}

// appendFrame seals cells as one frame and appends it to dst.
func (l *rawLink) appendFrame(dst []byte, cells []circuit.Cell) []byte {
	for i := range cells {
		cells[i].Encode(l.wbuf[circuit.FrameHeaderSize+i*circuit.CellSize:])
	}
	frame, err := l.send.SealFrame(l.wbuf, len(cells)*circuit.CellSize)
	if err != nil {
		panic(err)
	}
	return append(dst, frame...)
}

// writeCells sends cells at once (at most MaxCellsPerFrame).
func (l *rawLink) writeCells(cells ...circuit.Cell) error {
	_, err := l.nc.Write(l.appendFrame(nil, cells))
	return err
}

// readFrame reads one frame's header and ciphertext into buf and returns
// the ciphertext.
func (l *rawLink) readFrame(buf []byte) ([]byte, error) {
	if _, err := io.ReadFull(l.br, l.hdr[:]); err != nil {
		return nil, err
	}
	n, err := circuit.FrameLength(l.hdr[:])
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(l.br, buf[:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// readCells reads and opens one frame and returns its cells.
func (l *rawLink) readCells(buf []byte) ([]circuit.Cell, error) {
	ct, err := l.readFrame(buf)
	if err != nil {
		return nil, err
	}
	pt, err := l.recv.OpenFrame(ct)
	if err != nil {
		return nil, err
	}
	cells := make([]circuit.Cell, len(pt)/circuit.CellSize)
	for i := range cells {
		if err := circuit.DecodeCell(pt[i*circuit.CellSize:(i+1)*circuit.CellSize], &cells[i]); err != nil {
			return nil, err
		}
	}
	return cells, nil
}

// readCell returns the next non-padding cell, reading frames as needed.
func (l *rawLink) readCell(buf []byte, pending *[]circuit.Cell) (circuit.Cell, error) {
	for len(*pending) == 0 {
		cells, err := l.readCells(buf)
		if err != nil {
			return circuit.Cell{}, err
		}
		for _, c := range cells {
			if c.Cmd != circuit.CmdPadding {
				*pending = append(*pending, c)
			}
		}
	}
	c := (*pending)[0]
	*pending = (*pending)[1:]
	return c, nil
}

var errUnexpected = fmt.Errorf("unexpected cell")
