package socks

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// safety bounds a test that would otherwise hang on a bug; no assertion
// depends on it being short.
const safety = 30 * time.Second

// TestMain fails the package if any goroutine started by non-test code of
// this package (or by go-socks5) is still alive after every test ran.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitForServerGoroutines(5 * time.Second); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

var pkgDir = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file) + "/"
}()

// serverGoroutines lists goroutines with a frame in this package's non-test
// files or in go-socks5. We use this instead of go.uber.org/goleak to keep
// the shared go.mod untouched, and because it checks exactly the contract
// ("every goroutine Serve started has ended") rather than a global count
// that runtime and test-helper goroutines would make noisy.
func serverGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/armon/go-socks5") {
			out = append(out, g)
			continue
		}
		for _, line := range strings.Split(g, "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, pkgDir) && !strings.Contains(line, "_test.go:") {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// waitForServerGoroutines polls until none are left or limit passes (a
// goroutine that has signalled its WaitGroup may still be unwinding).
func waitForServerGoroutines(limit time.Duration) []string {
	deadline := time.Now().Add(limit)
	for {
		g := serverGoroutines()
		if len(g) == 0 || time.Now().After(deadline) {
			return g
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkNoServerGoroutines(t *testing.T) {
	t.Helper()
	if g := waitForServerGoroutines(5 * time.Second); len(g) > 0 {
		t.Fatalf("%d server goroutines still running after Serve returned:\n%s", len(g), strings.Join(g, "\n\n"))
	}
}

// call is one DialStream as the fake saw it.
type call struct {
	isolation string
	host      string
	port      uint16
}

func (c call) String() string {
	return fmt.Sprintf("{isolation=%q host=%q port=%d}", c.isolation, c.host, c.port)
}

// fakeDialer records every DialStream and answers with fn (nil: ErrRefused).
type fakeDialer struct {
	mu    sync.Mutex
	calls []call
	fn    func(ctx context.Context, c call) (net.Conn, error)
}

var _ Dialer = (*fakeDialer)(nil)

func (d *fakeDialer) DialStream(ctx context.Context, isolation, host string, port uint16) (net.Conn, error) {
	c := call{isolation, host, port}
	d.mu.Lock()
	d.calls = append(d.calls, c)
	fn := d.fn
	d.mu.Unlock()
	if fn == nil {
		return nil, ErrRefused
	}
	return fn(ctx, c)
}

func (d *fakeDialer) Calls() []call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]call(nil), d.calls...)
}

// dialTo returns a fake's fn that dials addr over loopback TCP, whatever the
// requested destination.
func dialTo(addr string) func(context.Context, call) (net.Conn, error) {
	return func(ctx context.Context, _ call) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// startServer listens on 127.0.0.1 and serves until the test ends; cleanup
// stops it, checks Serve's result and that its goroutines are gone, and that
// no panic was recovered.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(safety):
			t.Fatalf("Serve did not return after cancel")
		}
		checkNoServerGoroutines(t)
		if n := s.panics.Load(); n != 0 {
			t.Errorf("%d panics recovered", n)
		}
	})
	return s
}

// echoServer accepts on loopback and echoes every connection; when the
// client half-closes, it finishes echoing and half-closes back.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c) // wait for the other side to close
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// dialProxy opens a raw TCP connection to the server.
func dialProxy(t *testing.T, s *Server) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(safety))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// Wire builders for a hand-written client.

func greeting(methods ...byte) []byte {
	return append([]byte{5, byte(len(methods))}, methods...)
}

func userPass(user, pass string) []byte {
	b := []byte{1, byte(len(user))}
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...)
}

const (
	cmdConnect   = 1
	cmdBind      = 2
	cmdAssociate = 3
)

// request builds VER CMD RSV ATYP DST.ADDR DST.PORT; host is sent as an IP
// (ATYP 1 or 4, by its parsed length) if it parses, else as a name (ATYP 3).
func request(cmd byte, host string, port uint16) []byte {
	b := []byte{5, cmd, 0}
	if ip := net.ParseIP(host); ip != nil && !strings.Contains(host, ":") {
		b = append(b, 1)
		b = append(b, ip.To4()...)
	} else if ip != nil {
		b = append(b, 4)
		b = append(b, ip.To16()...)
	} else {
		b = append(b, 3, byte(len(host)))
		b = append(b, host...)
	}
	return binary.BigEndian.AppendUint16(b, port)
}

// connect performs a no-auth (user == nil) or username/password handshake
// and a CONNECT, and returns the reply code.
func connect(t *testing.T, c net.Conn, creds *[2]string, host string, port uint16) ReplyCode {
	t.Helper()
	if creds == nil {
		write(t, c, greeting(0))
		expect(t, c, []byte{5, 0})
	} else {
		write(t, c, greeting(2))
		expect(t, c, []byte{5, 2})
		write(t, c, userPass(creds[0], creds[1]))
		expect(t, c, []byte{1, 0})
	}
	write(t, c, request(cmdConnect, host, port))
	return readReply(t, c)
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func expect(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %x: %v", want, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
}

// readReply reads a reply and checks it is VER REP 0 1 0.0.0.0:0.
func readReply(t *testing.T, c net.Conn) ReplyCode {
	t.Helper()
	var b [10]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	if b[0] != 5 || b[2] != 0 || b[3] != 1 || !bytes.Equal(b[4:], make([]byte, 6)) {
		t.Fatalf("malformed reply %x", b)
	}
	return ReplyCode(b[1])
}

// expectClosed reads until the server closes and returns what it sent.
// A reset counts as closed.
func expectClosed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection not closed by the server (read %x)", b)
	}
	return b
}
