package linkio

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

// tcpPair returns two started links over loopback TCP, keyed as if a
// handshake had run.
func tcpPair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- nc
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	return startPair(t, a, b)
}

// TryWriteBatch never waits: against a peer that stops reading it keeps
// what the socket did not take, returns at once, and the bytes go out
// first, in order, when a writer that may wait flushes them; cells added
// while a tail is waiting queue behind it.
func TestTryWriteBatchNeverWaits(t *testing.T) {
	c, s := tcpPair(t)
	b := NewBatch()
	next := uint32(1)
	fill := func() {
		for !b.Full() {
			b.Add(&circuit.Cell{CircID: next, Cmd: circuit.CmdRelay})
			next++
		}
	}
	// Nobody reads s: the socket buffers fill and a tail appears.
	start := time.Now()
	batches := 0
	for !c.HasTail() {
		if batches > 10000 {
			t.Fatal("no tail after 10,000 batches to a peer that does not read")
		}
		fill()
		complete, err := c.TryWriteBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		if complete == c.HasTail() {
			t.Fatalf("TryWriteBatch reported complete=%v with HasTail=%v", complete, c.HasTail())
		}
		if b.Len() != 0 {
			t.Fatal("TryWriteBatch did not empty the batch")
		}
		batches++
	}
	// With a tail waiting, more batches are kept, not written around it.
	for range 3 {
		fill()
		if complete, err := c.TryWriteBatch(b); err != nil || complete {
			t.Fatalf("TryWriteBatch behind a tail: complete=%v err=%v", complete, err)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("%d non-waiting writes took %v", batches+3, took) // a hang, not a speed check
	}
	// Now the peer reads: every cell arrives once, in order, the tail's
	// before those of a later WriteBatch.
	fill()
	want := next - 1
	result := make(chan error, 1)
	go func() {
		expect := uint32(1)
		err := s.ReadLoop(func(cell *circuit.Cell) error {
			if cell.CircID != expect {
				result <- fmt.Errorf("cell %d arrived where %d was due", cell.CircID, expect)
				return errStop
			}
			if expect == want {
				result <- nil
			}
			expect++
			return nil
		})
		result <- err
	}()
	if err := c.FlushTail(); err != nil {
		t.Fatal(err)
	}
	if c.HasTail() {
		t.Fatal("tail left after FlushTail")
	}
	if err := c.WriteBatch(b); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the reader did not get all %d cells", want)
	}
}

var errStop = errors.New("test: stop")

// An idle link's reader gives its read buffer back after idleReadRelease
// and takes one again when bytes arrive; cells still flow.
func TestIdleLinkHoldsNoReadBuffer(t *testing.T) {
	old := idleReadRelease
	idleReadRelease = 20 * time.Millisecond
	defer func() { idleReadRelease = old }()
	c, s := tcpPair(t)
	base := ReadBuffersHeld()
	got := make(chan uint32, 4)
	go s.ReadLoop(func(cell *circuit.Cell) error { got <- cell.CircID; return nil })
	held := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for ReadBuffersHeld()-base != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d read buffers held, want %d", ReadBuffersHeld()-base, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	held(0) // waiting for its first bytes without a buffer
	for i := uint32(1); i <= 2; i++ {
		b := NewBatch()
		b.Add(&circuit.Cell{CircID: i, Cmd: circuit.CmdRelay})
		if err := c.WriteBatch(b); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-got:
			if id != i {
				t.Fatalf("got cell %d, want %d", id, i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cell %d not delivered", i)
		}
		held(0) // quiet again: the buffer goes back
	}
}
