package linkio

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
)

// pair runs a responder on loopback and returns the accepted link (via
// channel) and the listener address.
func responder(t *testing.T, key *crypto.StaticKey) (string, <-chan *Conn, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	links := make(chan *Conn, 1)
	errs := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			errs <- err
			return
		}
		c, err := Accept(nc, key, rand.Reader)
		if err != nil {
			errs <- err
			return
		}
		links <- c
	}()
	return ln.Addr().String(), links, errs
}

func TestLinkOverTCP(t *testing.T) {
	relayKey, _ := crypto.GenerateStaticKey(rand.Reader)
	clientKey, _ := crypto.GenerateStaticKey(rand.Reader)
	addr, links, errs := responder(t, &relayKey)
	var d net.Dialer
	c, err := Dial(context.Background(), &d, addr, &clientKey, relayKey.Public, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var s *Conn
	select {
	case s = <-links:
	case err := <-errs:
		t.Fatal(err)
	}
	defer s.Close()
	if s.PeerStatic() != clientKey.Public {
		t.Fatal("responder saw the wrong initiator key")
	}
	if !c.Initiator() || s.Initiator() {
		t.Fatal("initiator flags wrong")
	}
	got := make(chan uint32, 1000)
	go s.ReadLoop(func(cell *circuit.Cell) error { got <- cell.CircID; return nil })
	// Many cells: the writer batches them into frames; all arrive in order.
	for i := uint32(1); i <= 1000; i++ {
		cell := circuit.Cell{CircID: i, Cmd: circuit.CmdRelay}
		if err := c.Send(&cell); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint32(1); i <= 1000; i++ {
		select {
		case id := <-got:
			if id != i {
				t.Fatalf("cell %d arrived as %d", i, id)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cell %d never arrived", i)
		}
	}
	c.Close()
	if err := c.Send(&circuit.Cell{CircID: 1, Cmd: circuit.CmdRelay}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}

func TestLinkRefusesWrongKey(t *testing.T) {
	relayKey, _ := crypto.GenerateStaticKey(rand.Reader)
	other, _ := crypto.GenerateStaticKey(rand.Reader)
	clientKey, _ := crypto.GenerateStaticKey(rand.Reader)
	addr, links, _ := responder(t, &relayKey)
	var d net.Dialer
	if c, err := Dial(context.Background(), &d, addr, &clientKey, other.Public, rand.Reader); err == nil {
		c.Close()
		t.Fatal("link completed against a relay that does not hold the expected key")
	}
	select {
	case <-links:
		t.Fatal("responder accepted a handshake aimed at another key")
	default:
	}
}

// TestGarbageClosesLink: a peer that sends a bad frame after the handshake
// gets its link closed and ReadLoop returns an error.
func TestGarbageClosesLink(t *testing.T) {
	relayKey, _ := crypto.GenerateStaticKey(rand.Reader)
	clientKey, _ := crypto.GenerateStaticKey(rand.Reader)
	addr, links, _ := responder(t, &relayKey)
	var d net.Dialer
	c, err := Dial(context.Background(), &d, addr, &clientKey, relayKey.Public, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := <-links
	done := make(chan error, 1)
	go func() { done <- s.ReadLoop(func(*circuit.Cell) error { return nil }) }()
	// Write a frame of a valid length whose ciphertext is garbage.
	frame := make([]byte, 2+circuit.CellSize+circuit.TagSize)
	n := circuit.CellSize + circuit.TagSize
	frame[0], frame[1] = byte(n>>8), byte(n)
	c.nc.Write(frame)
	select {
	case err := <-done:
		if !errors.Is(err, circuit.ErrBadFrame) {
			t.Fatalf("ReadLoop ended with %v, want ErrBadFrame", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("garbage frame did not close the link")
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("link not closed")
	}
	c.Close()
}
