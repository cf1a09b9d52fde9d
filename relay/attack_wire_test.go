package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

// tap is a loopback TCP forwarder to a target that records every byte in
// each direction of every connection through it.
type tap struct {
	addr netip.AddrPort
	mu   sync.Mutex
	// streams[i] holds connection i's bytes: [0] toward the target,
	// [1] back from it.
	streams [][2]*bytes.Buffer
	wg      sync.WaitGroup
}

func newTap(t *testing.T, target netip.AddrPort) *tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target.String())
			if err != nil {
				in.Close()
				continue
			}
			bufs := [2]*bytes.Buffer{new(bytes.Buffer), new(bytes.Buffer)}
			tp.mu.Lock()
			tp.streams = append(tp.streams, bufs)
			tp.mu.Unlock()
			pipe := func(dst, src net.Conn, rec *bytes.Buffer) {
				defer tp.wg.Done()
				buf := make([]byte, 64<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						tp.mu.Lock()
						rec.Write(buf[:n])
						tp.mu.Unlock()
						if _, werr := dst.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				dst.Close()
				src.Close()
			}
			tp.wg.Add(2)
			go pipe(out, in, bufs[0])
			go pipe(in, out, bufs[1])
		}
	}()
	return tp
}

// frames splits a recorded direction of a link into its messages (2-byte
// length, then that many bytes) and returns their lengths; the bytes must
// end on a message boundary.
func frames(t *testing.T, b []byte) []int {
	t.Helper()
	var out []int
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("a stray byte after %d messages", len(out))
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			t.Fatalf("message %d cut: %d bytes of %d", len(out), len(b)-2, n)
		}
		out = append(out, n)
		b = b[2+n:]
	}
	return out
}

// TestWireFramesAreWholeCells: every byte a relay writes on its links over
// a whole circuit's life (the client link and the link to the next relay,
// both directions: link handshakes, CREATE, EXTEND, BEGIN, data of several
// sizes both ways, END, DESTROY) is, after the fixed-size link handshake,
// a frame of whole 514-byte cells plus the tag; and on the client's link
// every frame the relay wrote decrypts to cells that decode (DESIGN.md
// property 1 on the wire; circuit.TestAllCellsSameSize checks the cells
// themselves).
func TestWireFramesAreWholeCells(t *testing.T) {
	a, specA, cancelA, doneA := startRelay(t, nil)
	_, specB, cancelB, doneB := startRelay(t, nil)
	echo := echoServer(t)
	tapA, tapB := newTap(t, specA.Addr), newTap(t, specB.Addr)
	viaA, viaB := specA, specB
	viaA.Addr, viaB.Addr = tapA.addr, tapB.addr

	l, err := dialRawLink("127.0.0.2", viaA.Addr.String(), viaA.LinkKey)
	if err != nil {
		t.Fatal(err)
	}
	cc := circuit.NewClientCircuit(time.Now)
	const id = circuit.CircIDHighBit | 1
	var acts circuit.ClientActions
	buf := make([]byte, circuit.MaxFrameSize)
	var pending []circuit.Cell
	send := func() {
		t.Helper()
		for i := range acts.ToLink {
			acts.ToLink[i].CircID = id
		}
		for len(acts.ToLink) > 0 {
			k := min(len(acts.ToLink), circuit.MaxCellsPerFrame)
			if err := l.writeCells(acts.ToLink[:k]...); err != nil {
				t.Fatal(err)
			}
			acts.ToLink = acts.ToLink[k:]
		}
		acts.Reset()
	}
	recv := func() {
		t.Helper()
		c, err := l.readCell(buf, &pending)
		if err != nil || c.Cmd != circuit.CmdRelay {
			t.Fatalf("cell %d: %v", c.Cmd, err)
		}
		if err := cc.HandleBackward(&c.Payload, &acts); err != nil {
			t.Fatal(err)
		}
	}
	payloads, _ := cc.Create(rand.Reader, viaA)
	for _, p := range payloads {
		acts.ToLink = append(acts.ToLink, circuit.Cell{Cmd: circuit.CmdCreate, Payload: p})
	}
	send()
	c, err := l.readCell(buf, &pending)
	if err != nil || c.Cmd != circuit.CmdCreated || cc.HandleCreated(&c.Payload) != nil {
		t.Fatalf("CREATED: cell %d, %v", c.Cmd, err)
	}
	if err := cc.Extend(rand.Reader, viaB, &acts); err != nil {
		t.Fatal(err)
	}
	send()
	for !acts.Extended {
		recv()
	}
	acts.Reset()
	sid, err := cc.OpenStream("127.0.0.1", echo.Port(), &acts)
	if err != nil {
		t.Fatal(err)
	}
	send()
	for len(acts.Connected) == 0 {
		recv()
	}
	acts.Reset()
	for _, size := range []int{1, 497, 498, 1000, 20000} {
		msg := bytes.Repeat([]byte{0x5a}, size) // within one congestion window
		if n, err := cc.PackageData(sid, msg, &acts); err != nil || n != size {
			t.Fatalf("packaged %d of %d: %v", n, size, err)
		}
		send()
		got := 0
		for got < size {
			recv()
			for _, d := range acts.Data {
				got += len(d.Data)
				cc.StreamConsumed(sid, 1, &acts)
			}
			acts.Data = acts.Data[:0]
			send()
		}
	}
	if err := cc.CloseStream(sid, &acts); err != nil {
		t.Fatal(err)
	}
	send()
	acts.ToLink = append(acts.ToLink, circuit.DestroyCell(id, circuit.DestroyFinished))
	send()
	waitFor(t, func() bool { return a.circuitCount() == 0 })
	l.nc.Close()
	cancelA()
	<-doneA
	cancelB()
	<-doneB
	tapA.wg.Wait()
	tapB.wg.Wait()

	// The handshake is three fixed-size messages, initiator first.
	handshake := [2][]int{{circuit.LinkMsg1Size, circuit.LinkMsg3Size}, {circuit.LinkMsg2Size}}
	check := func(name string, streams [][2]*bytes.Buffer) {
		if len(streams) != 1 {
			t.Fatalf("%s: %d connections, want 1", name, len(streams))
		}
		for dir, rec := range streams[0] {
			fs := frames(t, rec.Bytes())
			hs := handshake[dir]
			if len(fs) < len(hs) {
				t.Fatalf("%s direction %d: %d messages", name, dir, len(fs))
			}
			for i, n := range hs {
				if fs[i] != n {
					t.Fatalf("%s direction %d: handshake message %d is %d bytes, want %d", name, dir, i, fs[i], n)
				}
			}
			cells := 0
			for i, n := range fs[len(hs):] {
				if n <= circuit.TagSize || (n-circuit.TagSize)%circuit.CellSize != 0 || n > circuit.MaxFrameSize {
					t.Fatalf("%s direction %d: frame %d of %d bytes is not whole cells", name, dir, i, n)
				}
				cells += (n - circuit.TagSize) / circuit.CellSize
			}
			t.Logf("%s direction %d: %d frames, %d cells", name, dir, len(fs)-len(hs), cells)
			if cells == 0 {
				t.Fatalf("%s direction %d carried no cell", name, dir)
			}
		}
	}
	check("client link", tapA.streams)
	check("relay link", tapB.streams)

	// On the client link, the relay's frames decrypt to whole cells.
	rec := tapA.streams[0][1].Bytes()
	rest := rec[2+circuit.LinkMsg2Size:]
	fc, _ := circuit.NewFrameCipher(l.recvKey)
	for len(rest) > 0 {
		n := int(binary.BigEndian.Uint16(rest))
		pt, err := fc.OpenFrame(append([]byte(nil), rest[2:2+n]...))
		if err != nil {
			t.Fatal(err)
		}
		for p := 0; p < len(pt); p += circuit.CellSize {
			var c circuit.Cell
			if err := circuit.DecodeCell(pt[p:p+circuit.CellSize], &c); err != nil {
				t.Fatal(err)
			}
		}
		rest = rest[2+n:]
	}
}
