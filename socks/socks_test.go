package socks

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"github.com/veilnet/veil/circuit"
	"golang.org/x/net/proxy"
)

// A real client (golang.org/x/net/proxy) through the server and the fake to
// a loopback echo server: a megabyte round-trips unchanged.
func TestRoundTripXNetProxy(t *testing.T) {
	echo := echoServer(t)
	d := &fakeDialer{fn: dialTo(echo)}
	s := startServer(t, Config{Dialer: d})

	p, err := proxy.SOCKS5("tcp", s.Addr().String(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Dial("tcp", "example.invalid:80")
	if err != nil {
		t.Fatalf("Dial through proxy: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(safety))

	want := make([]byte, 1<<20)
	rand.Read(want)
	go c.Write(want) // the echo writes back while we write
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echoed bytes differ")
	}
	if calls := d.Calls(); len(calls) != 1 || calls[0] != (call{"", "example.invalid", 80}) {
		t.Fatalf("dialer calls %v", calls)
	}
}

// Half-close: the client's FIN reaches the destination (the echo server only
// finishes after it), and the destination's FIN reaches the client, while
// the data in flight arrives in full.
func TestHalfClose(t *testing.T) {
	echo := echoServer(t)
	s := startServer(t, Config{Dialer: &fakeDialer{fn: dialTo(echo)}})
	c := dialProxy(t, s)
	if code := connect(t, c, nil, "example.invalid", 7); code != ReplySucceeded {
		t.Fatalf("reply %v", code)
	}
	write(t, c, []byte("hello, half-closed world"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c) // ends only if the echo's FIN came back
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != "hello, half-closed world" {
		t.Fatalf("got %q", got)
	}
}

// Bytes the client sends right behind the request, before the reply
// (optimistic data), are not lost in any of the parsers' buffers.
func TestOptimisticData(t *testing.T) {
	for _, creds := range []*[2]string{nil, {"alice", "secret"}} {
		t.Run(fmt.Sprint(creds != nil), func(t *testing.T) {
			echo := echoServer(t)
			s := startServer(t, Config{Dialer: &fakeDialer{fn: dialTo(echo)}})
			c := dialProxy(t, s)
			var msg []byte
			if creds == nil {
				msg = greeting(0)
			} else {
				msg = append(greeting(2), userPass(creds[0], creds[1])...)
			}
			msg = append(msg, request(cmdConnect, "example.invalid", 80)...)
			payload := bytes.Repeat([]byte("GET / HTTP/1.0\r\n\r\n"), 100)
			write(t, c, append(msg, payload...)) // all in one write
			if creds == nil {
				expect(t, c, []byte{5, 0})
			} else {
				expect(t, c, []byte{5, 2, 1, 0})
			}
			if code := readReply(t, c); code != ReplySucceeded {
				t.Fatalf("reply %v", code)
			}
			expect(t, c, payload)
		})
	}
}

// The handshake deadline is cleared once the CONNECT reply is sent: an idle
// relayed connection outlives HandshakeTimeout. (If the deadline stayed, the
// connection would be closed by the time we write, however slow the machine.)
func TestHandshakeDeadlineCleared(t *testing.T) {
	echo := echoServer(t)
	s := startServer(t, Config{Dialer: &fakeDialer{fn: dialTo(echo)}, HandshakeTimeout: 50 * time.Millisecond})
	c := dialProxy(t, s)
	if code := connect(t, c, nil, "example.invalid", 80); code != ReplySucceeded {
		t.Fatalf("reply %v", code)
	}
	time.Sleep(200 * time.Millisecond)
	write(t, c, []byte("still here"))
	expect(t, c, []byte("still here"))
}

// A client that says nothing is disconnected by the handshake deadline.
func TestHandshakeTimeout(t *testing.T) {
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d, HandshakeTimeout: 50 * time.Millisecond})
	for _, partial := range [][]byte{nil, {5}, greeting(0)} {
		c := dialProxy(t, s)
		write(t, c, partial)
		got := expectClosed(t, c)
		if len(partial) == 3 && !bytes.Equal(got, []byte{5, 0}) {
			t.Fatalf("after greeting got %x", got)
		}
	}
	if len(d.Calls()) != 0 {
		t.Fatal("dialer called")
	}
}

// Destinations reach the Dialer exactly as sent: names unresolved (even ones
// that look local), IP literals as literals, IPv4-mapped IPv6 kept IPv6.
func TestDestinationsPassThrough(t *testing.T) {
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d})
	cases := []struct {
		atyp byte
		addr []byte
		want string
	}{
		{3, []byte("example.invalid"), "example.invalid"},
		{3, []byte("localhost"), "localhost"},
		{3, []byte("foo.local"), "foo.local"},
		{3, []byte("LocalHost."), "LocalHost."},
		{3, []byte("127.0.0.1"), "127.0.0.1"}, // an IP sent as a name stays a name
		{3, []byte("xn--bcher-kva.example"), "xn--bcher-kva.example"},
		{1, []byte{10, 1, 2, 3}, "10.1.2.3"},
		{1, []byte{127, 0, 0, 1}, "127.0.0.1"},
		{4, net.ParseIP("2001:db8::1"), "2001:db8::1"},
		{4, net.ParseIP("::1"), "::1"},
		{4, net.ParseIP("::ffff:192.0.2.1").To16(), "::ffff:192.0.2.1"},
	}
	for i, tc := range cases {
		port := uint16(1000 + i)
		c := dialProxy(t, s)
		write(t, c, greeting(0))
		expect(t, c, []byte{5, 0})
		req := []byte{5, cmdConnect, 0, tc.atyp}
		if tc.atyp == 3 {
			req = append(req, byte(len(tc.addr)))
		}
		req = append(req, tc.addr...)
		req = append(req, byte(port>>8), byte(port))
		write(t, c, req)
		if code := readReply(t, c); code != ReplyConnectionRefused {
			t.Fatalf("%s: reply %v", tc.want, code)
		}
		expectClosed(t, c)
		calls := d.Calls()
		if got := calls[len(calls)-1]; got != (call{"", tc.want, port}) {
			t.Errorf("dialer got %v, want host %q port %d", got, tc.want, port)
		}
	}
	if n := len(d.Calls()); n != len(cases) {
		t.Fatalf("%d calls for %d requests", n, len(cases))
	}
}

// Names that no exit could resolve are refused locally with 0x04.
func TestInvalidHostnames(t *testing.T) {
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d})
	for _, name := range []string{"", "a b", "evil\r\nname", "nul\x00"} {
		c := dialProxy(t, s)
		write(t, c, greeting(0))
		expect(t, c, []byte{5, 0})
		write(t, c, append(append([]byte{5, 1, 0, 3, byte(len(name))}, name...), 0, 80))
		if code := readReply(t, c); code != ReplyHostUnreachable {
			t.Fatalf("%q: reply %v", name, code)
		}
		expectClosed(t, c)
	}
	if len(d.Calls()) != 0 {
		t.Fatalf("dialer called: %v", d.Calls())
	}
}

// No local resolver is ever reached. net.DefaultResolver is replaced by one
// whose Dial records every call; a control lookup proves the hook sees
// resolution, then requests for names through the server must not trigger it.
// (go-socks5's DNSResolver uses net.ResolveIPAddr, which goes through
// net.DefaultResolver.) Not parallel: it swaps a global.
func TestNoLocalDNS(t *testing.T) {
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d})

	var lookups atomic.Int64
	old := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			lookups.Add(1)
			return nil, errors.New("test: DNS is forbidden")
		},
	}
	defer func() { net.DefaultResolver = old }()

	// Control: the hook does notice a lookup, as go-socks5's DNSResolver makes.
	if _, err := net.ResolveIPAddr("ip", "veil-dns-probe.example"); err == nil {
		t.Fatal("control lookup succeeded")
	}
	if lookups.Load() == 0 {
		t.Fatal("control lookup did not reach the hook; the test would prove nothing")
	}
	lookups.Store(0)

	for _, name := range []string{"veil-dns-probe.example", "example.invalid", "localhost", "foo.local"} {
		c := dialProxy(t, s)
		if code := connect(t, c, nil, name, 80); code != ReplyConnectionRefused {
			t.Fatalf("%s: reply %v", name, code)
		}
	}
	if n := lookups.Load(); n != 0 {
		t.Fatalf("%d local DNS lookups", n)
	}
	if n := len(d.Calls()); n != 4 {
		t.Fatalf("%d dialer calls", n)
	}
}

// The Resolver we give go-socks5 never returns an address.
func TestNoResolver(t *testing.T) {
	for _, name := range []string{"localhost", "127.0.0.1", "example.com"} {
		_, ip, err := noResolver{}.Resolve(context.Background(), name)
		if ip != nil || err != nil {
			t.Fatalf("Resolve(%q) = %v, %v", name, ip, err)
		}
	}
}

// If an address ever arrives with a name (a resolver slipped in), dial
// refuses instead of using either.
func TestResolvedNameFailsClosed(t *testing.T) {
	ss := &session{}
	ss.dest = nil
	if _, _, err := ss.target(); err == nil {
		t.Fatal("no request: want error")
	}
	ss.dest = &socks5.AddrSpec{FQDN: "example.com", IP: net.IPv4(192, 0, 2, 1), Port: 80}
	if _, _, err := ss.target(); !errors.Is(err, errResolved) {
		t.Fatalf("got %v, want errResolved", err)
	}
	ss.dest = &socks5.AddrSpec{FQDN: "example.com", Port: 80}
	if h, p, err := ss.target(); err != nil || h != "example.com" || p != 80 {
		t.Fatalf("got %q %d %v", h, p, err)
	}
}

// Isolation keys: no-auth is ""; the same username/password gives the same
// key, any difference in either gives a different one; x/net/proxy, which
// offers [no-auth, username/password] in that order, still gets
// username/password.
func TestIsolation(t *testing.T) {
	echo := echoServer(t)
	d := &fakeDialer{fn: dialTo(echo)}
	s := startServer(t, Config{Dialer: d})

	creds := []*proxy.Auth{
		nil,
		{User: "alice", Password: "one"},
		{User: "alice", Password: "one"},
		{User: "alice", Password: "two"},
		{User: "bob", Password: "one"},
		{User: "alic", Password: "eone"},
	}
	for _, a := range creds {
		p, err := proxy.SOCKS5("tcp", s.Addr().String(), a, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		c, err := p.Dial("tcp", "example.invalid:443")
		if err != nil {
			t.Fatalf("Dial with %v: %v", a, err)
		}
		c.Close()
	}
	calls := d.Calls()
	if len(calls) != len(creds) {
		t.Fatalf("%d calls", len(calls))
	}
	k := func(i int) string { return calls[i].isolation }
	if k(0) != "" {
		t.Errorf("no-auth key %q, want empty", k(0))
	}
	if k(1) == "" || k(1) != k(2) {
		t.Errorf("same credentials, keys %q and %q", k(1), k(2))
	}
	seen := map[string]int{}
	for _, i := range []int{0, 1, 3, 4, 5} {
		if j, ok := seen[k(i)]; ok {
			t.Errorf("credentials %d and %d share key %q", j, i, k(i))
		}
		seen[k(i)] = i
	}
}

// Method choice is the server's: username/password whenever offered.
func TestMethodSelection(t *testing.T) {
	s := startServer(t, Config{Dialer: &fakeDialer{}})
	cases := []struct {
		offer []byte
		want  byte
	}{
		{[]byte{0}, 0},
		{[]byte{2}, 2},
		{[]byte{0, 2}, 2},
		{[]byte{2, 0}, 2},
		{[]byte{1, 0x80, 0, 2}, 2},
		{[]byte{1, 0x80, 0}, 0},
	}
	for _, tc := range cases {
		c := dialProxy(t, s)
		write(t, c, greeting(tc.offer...))
		expect(t, c, []byte{5, tc.want})
	}
}

// Empty username and password are accepted, and differ from no-auth.
func TestEmptyCredentials(t *testing.T) {
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d})
	c := dialProxy(t, s)
	if code := connect(t, c, &[2]string{"", ""}, "example.invalid", 80); code != ReplyConnectionRefused {
		t.Fatalf("reply %v", code)
	}
	if k := d.Calls()[0].isolation; k == "" {
		t.Fatal("empty credentials gave the no-auth key")
	}
}

func TestIsolationKeyInjective(t *testing.T) {
	pairs := [][2]string{{"", ""}, {"a", ""}, {"", "a"}, {"ab", ""}, {"a", "b"}, {"", "ab"}, {"\x01a", ""}, {"\x00", "\x00"}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		k := isolationKey([]byte(p[0]), []byte(p[1]))
		if k == "" {
			t.Errorf("%q: empty key", p)
		}
		if q, ok := seen[k]; ok {
			t.Errorf("%q and %q share key %q", p, q, k)
		}
		seen[k] = p
	}
}

// Each typed error from the Dialer reaches the client as its reply code,
// and the connection is then closed.
func TestReplyCodes(t *testing.T) {
	cases := []struct {
		err  error
		want ReplyCode
	}{
		{ErrNotAllowed, ReplyNotAllowed},
		{ErrNetworkUnreachable, ReplyNetworkUnreachable},
		{ErrHostUnreachable, ReplyHostUnreachable},
		{ErrDNSFailure, ReplyHostUnreachable},
		{ErrRefused, ReplyConnectionRefused},
		{ErrTTLExpired, ReplyTTLExpired},
		{fmt.Errorf("client: stream to exit: %w", ErrRefused), ReplyConnectionRefused},
		{fmt.Errorf("client: %w: %w", ErrNotAllowed, errors.New("reason")), ReplyNotAllowed},
		{context.DeadlineExceeded, ReplyTTLExpired},
		{fmt.Errorf("client: %w", context.Canceled), ReplyGeneralFailure},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, ReplyConnectionRefused},
		{errors.New("circuit destroyed"), ReplyGeneralFailure},
		{errors.New("connection refused"), ReplyGeneralFailure}, // text is not matched
	}
	var mu sync.Mutex
	var next error
	d := &fakeDialer{fn: func(context.Context, call) (net.Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		return nil, next
	}}
	s := startServer(t, Config{Dialer: d})
	for _, tc := range cases {
		mu.Lock()
		next = tc.err
		mu.Unlock()
		c := dialProxy(t, s)
		if got := connect(t, c, nil, "example.invalid", 80); got != tc.want {
			t.Errorf("%v: reply %v (%#x), want %v (%#x)", tc.err, got, byte(got), tc.want, byte(tc.want))
		}
		if rest := expectClosed(t, c); len(rest) != 0 {
			t.Errorf("%v: extra bytes after the reply: %x", tc.err, rest) // go-socks5's own reply must be swallowed
		}
	}
}

func TestReplyCodeFor(t *testing.T) {
	if ReplyCodeFor(nil) != ReplySucceeded {
		t.Fatal("nil")
	}
	timeout := &net.OpError{Op: "dial", Err: timeoutErr{}}
	if got := ReplyCodeFor(timeout); got != ReplyTTLExpired {
		t.Fatalf("timeout: %v", got)
	}
	if got := ReplyCodeFor(fmt.Errorf("x: %w", syscall.ENETUNREACH)); got != ReplyNetworkUnreachable {
		t.Fatalf("ENETUNREACH: %v", got)
	}
	for c := ReplySucceeded; c <= ReplyAddressNotSupported+1; c++ {
		if c.String() == "" {
			t.Fatalf("%d: empty name", c)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

// A stream that completes slower than ConnectTimeout gets 0x06, and the
// Dialer sees its context cancelled.
func TestConnectTimeout(t *testing.T) {
	d := &fakeDialer{fn: func(ctx context.Context, _ call) (net.Conn, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("client: waiting for circuit: %w", ctx.Err())
	}}
	s := startServer(t, Config{Dialer: d, ConnectTimeout: 20 * time.Millisecond})
	c := dialProxy(t, s)
	if code := connect(t, c, nil, "example.invalid", 80); code != ReplyTTLExpired {
		t.Fatalf("reply %v", code)
	}
}

// BIND, UDP ASSOCIATE and unknown commands answer 0x07 and never dial.
func TestUnsupportedCommands(t *testing.T) {
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d})
	for _, cmd := range []byte{cmdBind, cmdAssociate, 0, 9, 0xFF} {
		c := dialProxy(t, s)
		write(t, c, greeting(0))
		expect(t, c, []byte{5, 0})
		write(t, c, request(cmd, "example.invalid", 80))
		if code := readReply(t, c); code != ReplyCommandNotSupported {
			t.Fatalf("cmd %d: reply %v", cmd, code)
		}
		expectClosed(t, c)
	}
	if len(d.Calls()) != 0 {
		t.Fatalf("dialer called: %v", d.Calls())
	}
}

// Malformed, truncated or foreign first bytes: the server answers at most
// what the protocol says, closes the connection, never dials, never panics.
func TestMalformed(t *testing.T) {
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d})
	req := request(cmdConnect, "example.invalid", 80)
	cases := []struct {
		name string
		in   []byte
		want []byte // what the server sends before closing
	}{
		{"empty", nil, nil},
		{"socks4", []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, nil},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil},
		{"version only", []byte{5}, nil},
		{"zero methods", []byte{5, 0}, []byte{5, 0xFF}},
		{"no usable method", greeting(1, 0x80, 0xFE), []byte{5, 0xFF}},
		{"truncated methods", []byte{5, 3, 0}, nil},
		{"bad userpass version", append(greeting(2), 5, 1, 'a', 1, 'b'), []byte{5, 2}},
		{"truncated userpass", append(greeting(2), 1, 5, 'a'), []byte{5, 2}},
		{"bad request version", append(greeting(0), append([]byte{4}, req[1:]...)...), []byte{5, 0}},
		{"truncated request", append(greeting(0), req[:len(req)-1]...), []byte{5, 0}},
		{"bad address type", append(greeting(0), 5, 1, 0, 9, 1, 2, 3, 4, 0, 80), []byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"truncated ipv6", append(greeting(0), 5, 1, 0, 4, 1, 2, 3), []byte{5, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialProxy(t, s)
			write(t, c, tc.in)
			c.CloseWrite()
			if got := expectClosed(t, c); !bytes.Equal(got, tc.want) {
				t.Fatalf("server sent %x, want %x", got, tc.want)
			}
		})
	}
	if len(d.Calls()) != 0 {
		t.Fatalf("dialer called: %v", d.Calls())
	}
}

// go-socks5 issue #50: a stream whose LocalAddr is not a *net.TCPAddr (here
// net.Pipe's) must work, not panic.
func TestPipeStream(t *testing.T) {
	var wg sync.WaitGroup
	defer wg.Wait()
	d := &fakeDialer{fn: func(context.Context, call) (net.Conn, error) {
		a, b := net.Pipe()
		wg.Add(1)
		go func() { // echo one message, then close
			defer wg.Done()
			defer b.Close()
			buf := make([]byte, 5)
			if _, err := io.ReadFull(b, buf); err == nil {
				b.Write(buf)
			}
		}()
		return a, nil
	}}
	s := startServer(t, Config{Dialer: d})
	c := dialProxy(t, s)
	if code := connect(t, c, nil, "example.invalid", 80); code != ReplySucceeded {
		t.Fatalf("reply %v", code)
	}
	write(t, c, []byte("pipes"))
	expect(t, c, []byte("pipes"))
	expectClosed(t, c)
}

// A panic below the trust boundary costs one connection, not the process.
func TestPanicRecovered(t *testing.T) {
	echo := echoServer(t)
	var boom atomic.Bool
	boom.Store(true)
	d := &fakeDialer{fn: func(ctx context.Context, c call) (net.Conn, error) {
		if boom.Swap(false) {
			panic("dialer bug")
		}
		return dialTo(echo)(ctx, c)
	}}
	s, err := Listen(Config{Addr: "127.0.0.1:0", Dialer: d})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	c := dialProxy(t, s)
	write(t, c, greeting(0))
	expect(t, c, []byte{5, 0})
	write(t, c, request(cmdConnect, "example.invalid", 80))
	expectClosed(t, c)

	c = dialProxy(t, s)
	if code := connect(t, c, nil, "example.invalid", 80); code != ReplySucceeded {
		t.Fatalf("after panic: reply %v", code)
	}
	write(t, c, []byte("ok"))
	expect(t, c, []byte("ok"))

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkNoServerGoroutines(t)
	if n := s.panics.Load(); n != 1 {
		t.Fatalf("%d panics recovered, want 1", n)
	}
}

// Beyond MaxConns a new connection is closed at once; a freed slot is reused.
func TestMaxConns(t *testing.T) {
	s := startServer(t, Config{Dialer: &fakeDialer{}, MaxConns: 1})
	c1 := dialProxy(t, s)
	write(t, c1, greeting(0))
	expect(t, c1, []byte{5, 0}) // c1 holds the only slot

	c2 := dialProxy(t, s)
	write(t, c2, greeting(0))
	if got := expectClosed(t, c2); len(got) != 0 {
		t.Fatalf("over-limit connection got %x", got)
	}

	c1.Close()
	deadline := time.Now().Add(safety)
	for len(s.sem) != 0 { // wait until c1's session has ended
		if time.Now().After(deadline) {
			t.Fatal("slot never freed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c3 := dialProxy(t, s)
	write(t, c3, greeting(0))
	expect(t, c3, []byte{5, 0})
}

// Serve returns on ctx cancel or Close, closing connections in every state,
// with no goroutine left behind.
func TestShutdown(t *testing.T) {
	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			echo := echoServer(t)
			started := make(chan struct{})
			d := &fakeDialer{fn: func(ctx context.Context, c call) (net.Conn, error) {
				if c.host == "slow.invalid" {
					close(started)
					<-ctx.Done() // a circuit that never completes
					return nil, ctx.Err()
				}
				return dialTo(echo)(ctx, c)
			}}
			s, err := Listen(Config{Addr: "127.0.0.1:0", Dialer: d})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx) }()

			idle := dialProxy(t, s) // in the handshake
			write(t, idle, []byte{5})
			relaying := dialProxy(t, s) // relaying
			if code := connect(t, relaying, nil, "example.invalid", 80); code != ReplySucceeded {
				t.Fatalf("reply %v", code)
			}
			write(t, relaying, []byte("x"))
			expect(t, relaying, []byte("x"))
			dialing := dialProxy(t, s) // waiting for DialStream
			write(t, dialing, greeting(0))
			expect(t, dialing, []byte{5, 0})
			write(t, dialing, request(cmdConnect, "slow.invalid", 80))
			<-started

			if how == "cancel" {
				cancel()
			} else if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(safety):
				t.Fatal("Serve did not return")
			}
			checkNoServerGoroutines(t)
			expectClosed(t, idle)
			expectClosed(t, relaying)
			if got := expectClosed(t, dialing); len(got) > 10 {
				t.Fatalf("dialing client got %x", got)
			}
			if _, err := net.Dial("tcp", s.Addr().String()); err == nil {
				t.Fatal("listener still open")
			}
			if err := s.Serve(context.Background()); err == nil {
				t.Fatal("second Serve did not fail")
			}
		})
	}
}

// Close before Serve: Serve returns at once.
func TestCloseBeforeServe(t *testing.T) {
	s, err := Listen(Config{Addr: "127.0.0.1:0", Dialer: &fakeDialer{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkNoServerGoroutines(t)
}

// Non-loopback listen addresses are refused before anything is bound.
func TestListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0", "10.0.0.1:9050"} {
		_, err := Listen(Config{Addr: addr, Dialer: &fakeDialer{}})
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("Listen(%q) = %v, want ErrNotLoopback", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.2:0", "localhost:0", "[::1]:0"} {
		s, err := Listen(Config{Addr: addr, Dialer: &fakeDialer{}})
		if addr == "[::1]:0" && err != nil && !errors.Is(err, ErrNotLoopback) {
			t.Logf("skipping %s: %v", addr, err) // no IPv6 loopback here
			continue
		}
		if err != nil {
			t.Errorf("Listen(%q): %v", addr, err)
			continue
		}
		if !isLoopback(s.Addr()) {
			t.Errorf("Listen(%q) bound %v", addr, s.Addr())
		}
		s.Close()
	}
	// With AllowNonLoopback the address is used as given. (Checked on the
	// pure function: this test binds nothing outside loopback.)
	for _, addr := range []string{"0.0.0.0:9050", ":9050", "example.com:9050"} {
		if got, err := listenAddr(addr, true); err != nil || got != addr {
			t.Errorf("listenAddr(%q, true) = %q, %v", addr, got, err)
		}
	}
	if _, err := Listen(Config{Addr: "127.0.0.1:0"}); err == nil {
		t.Error("nil Dialer accepted")
	}
	if _, err := Listen(Config{Addr: "127.0.0.1", Dialer: &fakeDialer{}}); err == nil {
		t.Error("address without port accepted")
	}
}

// curl-like: a user/pass client that sends credentials and a name.
func TestUserPassConnect(t *testing.T) {
	echo := echoServer(t)
	d := &fakeDialer{fn: dialTo(echo)}
	s := startServer(t, Config{Dialer: d})
	c := dialProxy(t, s)
	if code := connect(t, c, &[2]string{"tab-1", "nonce"}, "example.invalid", 8080); code != ReplySucceeded {
		t.Fatalf("reply %v", code)
	}
	write(t, c, []byte("ping"))
	expect(t, c, []byte("ping"))
	want := call{isolationKey([]byte("tab-1"), []byte("nonce")), "example.invalid", 8080}
	if got := d.Calls(); len(got) != 1 || got[0] != want {
		t.Fatalf("calls %v, want %v", got, want)
	}
}

type endErr struct{ r circuit.EndReason }

func (e *endErr) Error() string                { return "client: stream ended" }
func (e *endErr) EndReason() circuit.EndReason { return e.r }

// ClientDialer maps END reasons carried by the client's errors to replies.
func TestClientDialerEndReasons(t *testing.T) {
	cases := []struct {
		r    circuit.EndReason
		want ReplyCode
	}{
		{circuit.EndExitPolicy, ReplyNotAllowed},
		{circuit.EndConnectRefused, ReplyConnectionRefused},
		{circuit.EndResolveFailed, ReplyHostUnreachable},
		{circuit.EndTimeout, ReplyTTLExpired},
		{circuit.EndNoRoute, ReplyHostUnreachable},
		{circuit.EndDestroy, ReplyGeneralFailure},
		{circuit.EndResourceLimit, ReplyGeneralFailure},
	}
	for _, tc := range cases {
		inner := &fakeDialer{fn: func(context.Context, call) (net.Conn, error) {
			return nil, fmt.Errorf("client: attempt 3: %w", &endErr{tc.r})
		}}
		_, err := ClientDialer(inner).DialStream(context.Background(), "k", "example.invalid", 80)
		if got := ReplyCodeFor(err); got != tc.want {
			t.Errorf("reason %d: reply %v, want %v", tc.r, got, tc.want)
		}
		var ee *endErr
		if !errors.As(err, &ee) {
			t.Errorf("reason %d: original error lost", tc.r)
		}
		if c := inner.Calls(); len(c) != 1 || c[0] != (call{"k", "example.invalid", 80}) {
			t.Errorf("inner calls %v", c)
		}
	}
}
