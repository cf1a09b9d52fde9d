package socks

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// closeRecorder notes whether the server closed its end.
type closeRecorder struct {
	net.Conn
	closed atomic.Bool
}

func (c *closeRecorder) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// fuzzErrors are what the fuzzed Dialer may answer; index 0 means success.
var fuzzErrors = []error{nil, ErrRefused, ErrNotAllowed, ErrDNSFailure, errors.New("other"), context.DeadlineExceeded}

// FuzzServe feeds arbitrary bytes to the server as a client's first bytes,
// followed by EOF, over net.Pipe; mode picks the Dialer's answer.
//
// Invariant: serving the connection returns (nothing waits for more than the
// client sent), the server has closed the connection, no panic was
// recovered, the Dialer ran at most once and only with a valid hostname or
// an IP literal, and no goroutine the session started is left.
func FuzzServe(f *testing.F) {
	connect := func(creds *[2]string, host string) []byte {
		var b []byte
		if creds == nil {
			b = greeting(0)
		} else {
			b = append(greeting(0, 2), userPass(creds[0], creds[1])...)
		}
		return append(b, request(cmdConnect, host, 80)...)
	}
	f.Add(connect(nil, "example.invalid"), byte(0))
	f.Add(append(connect(nil, "example.invalid"), "GET / HTTP/1.0\r\n\r\n"...), byte(0))
	f.Add(connect(&[2]string{"u", "p"}, "192.0.2.1"), byte(1))
	f.Add(connect(nil, "2001:db8::1"), byte(2))
	f.Add(append(greeting(0), request(cmdBind, "example.invalid", 80)...), byte(0))
	f.Add(append(greeting(0), 5, 1, 0, 9, 0, 0), byte(0))
	f.Add(append(greeting(2), 1, 0, 0), byte(0))
	f.Add([]byte{5, 0}, byte(0))
	f.Add([]byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, byte(0))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), byte(0))

	f.Fuzz(func(t *testing.T, in []byte, mode byte) {
		answer := fuzzErrors[int(mode)%len(fuzzErrors)]
		var helpers sync.WaitGroup
		d := &fakeDialer{fn: func(context.Context, call) (net.Conn, error) {
			if answer != nil {
				return nil, answer
			}
			stream, peer := net.Pipe()
			helpers.Add(1)
			go func() { // the destination says hello and hangs up
				defer helpers.Done()
				peer.Write([]byte("hello"))
				peer.Close()
			}()
			return stream, nil
		}}
		s, err := newServer(Config{Dialer: d, HandshakeTimeout: safety})
		if err != nil {
			t.Fatal(err)
		}
		client, server := net.Pipe()
		rec := &closeRecorder{Conn: server}
		helpers.Add(2)
		go func() {
			defer helpers.Done()
			client.Write(in) // returns early if the server stops reading
			client.Close()   // EOF for the server
		}()
		go func() {
			defer helpers.Done()
			io.Copy(io.Discard, client)
		}()

		s.wg.Add(1) // as acceptLoop does
		func() {
			defer s.wg.Done()
			s.serveConn(context.Background(), rec)
		}()
		helpers.Wait()

		if !rec.closed.Load() {
			t.Fatal("connection not closed")
		}
		if n := s.panics.Load(); n != 0 {
			t.Fatalf("%d panics recovered", n)
		}
		calls := d.Calls()
		if len(calls) > 1 {
			t.Fatalf("%d dials", len(calls))
		}
		if len(calls) == 1 && !validHostname(calls[0].host) {
			t.Fatalf("dialed invalid host %q", calls[0].host)
		}
		s.mu.Lock()
		live := len(s.sessions)
		s.mu.Unlock()
		if live != 0 {
			t.Fatalf("%d sessions still tracked", live)
		}
	})
}
