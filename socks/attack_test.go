package socks

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

// Attacks on the SOCKS port from a local program: every malformed,
// truncated, oversized or unsupported request gets the reply RFC 1928
// prescribes (or none, when the request never completed) and nothing else;
// no stream is dialed and no name is resolved on this machine.

// forbidDNS replaces net.DefaultResolver for the test with one that
// records and refuses every lookup, and checks that the hook works. It
// returns the lookup counter. Tests using it must not run in parallel.
func forbidDNS(t *testing.T) *atomic.Int64 {
	t.Helper()
	var lookups atomic.Int64
	old := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{
		PreferGo: true,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			lookups.Add(1)
			return nil, errors.New("test: DNS is forbidden")
		},
	}
	t.Cleanup(func() { net.DefaultResolver = old })
	if _, err := net.ResolveIPAddr("ip", "veil-dns-probe.example"); err == nil || lookups.Load() == 0 {
		t.Fatal("the DNS hook does not see lookups; the test would prove nothing")
	}
	lookups.Store(0)
	return &lookups
}

// exchange is a client's side of a valid SOCKS5 negotiation: the messages
// it sends, in order, and what the server answers each complete one with
// (the last answer, to the request, is a reply checked separately).
type exchange struct {
	name    string
	msgs    [][]byte
	answers [][]byte
}

func validExchanges() []exchange {
	v6 := append([]byte{5, cmdConnect, 0, 4}, net.ParseIP("2001:db8::7").To16()...)
	v6 = append(v6, 1, 187)
	return []exchange{
		{"no-auth, name", [][]byte{greeting(0), request(cmdConnect, "example.invalid", 443)}, [][]byte{{5, 0}}},
		{"no-auth, IPv4", [][]byte{greeting(0), request(cmdConnect, "192.0.2.7", 80)}, [][]byte{{5, 0}}},
		{"no-auth, IPv6", [][]byte{greeting(0), v6}, [][]byte{{5, 0}}},
		{"user/pass, name", [][]byte{greeting(0, 2), userPass("alice", "secret"), request(cmdConnect, "example.invalid", 443)}, [][]byte{{5, 2}, {1, 0}}},
	}
}

// TestAttackTruncatedAtEveryByte: every valid negotiation, cut after each
// of its bytes and followed by the client's FIN, gets exactly the answers
// to the messages it completed, then the server closes: no reply to a
// request that never arrived whole, no dial, no DNS.
func TestAttackTruncatedAtEveryByte(t *testing.T) {
	lookups := forbidDNS(t)
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d})
	for _, ex := range validExchanges() {
		all := bytes.Join(ex.msgs, nil)
		for cut := 0; cut < len(all); cut++ {
			var want []byte
			end := 0
			for i, m := range ex.msgs[:len(ex.msgs)-1] {
				if end += len(m); cut >= end {
					want = append(want, ex.answers[i]...)
				}
			}
			c := dialProxy(t, s)
			write(t, c, all[:cut])
			c.CloseWrite()
			if got := expectClosed(t, c); !bytes.Equal(got, want) {
				t.Fatalf("%s cut after %d of %d bytes: server sent %x, want %x", ex.name, cut, len(all), got, want)
			}
			c.Close()
		}
		// Whole, it reaches the dialer (which refuses: 0x05).
		c := dialProxy(t, s)
		write(t, c, all)
		expect(t, c, bytes.Join(ex.answers, nil))
		if code := readReply(t, c); code != ReplyConnectionRefused {
			t.Fatalf("%s whole: reply %v", ex.name, code)
		}
	}
	if n := len(d.Calls()); n != len(validExchanges()) {
		t.Fatalf("%d dials, want one per whole negotiation (%d): %v", n, len(validExchanges()), d.Calls())
	}
	if n := lookups.Load(); n != 0 {
		t.Fatalf("%d local DNS lookups", n)
	}
}

// TestAttackOversizedAndTrailing: the largest fields SOCKS allows (255
// methods, a 255-byte name, 255-byte username and password) work and
// reach the dialer intact; a name shorter than its length byte claims,
// followed by FIN, gets no reply; garbage after the greeting is read as
// the request and refused without a reply; a megabyte of garbage is not
// buffered (the connection is closed after the first bad byte). No DNS.
func TestAttackOversizedAndTrailing(t *testing.T) {
	lookups := forbidDNS(t)
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d})

	long := strings.Repeat("a", 251) + ".xyz" // 255 bytes, the most ATYP 3 holds
	methods := make([]byte, 255)
	for i := range methods {
		methods[i] = byte(i + 1) // 1..255: includes 2 (user/pass), not 0
	}
	user, pass := strings.Repeat("u", 255), strings.Repeat("p", 255)
	c := dialProxy(t, s)
	write(t, c, greeting(methods...))
	expect(t, c, []byte{5, 2})
	write(t, c, userPass(user, pass))
	expect(t, c, []byte{1, 0})
	write(t, c, request(cmdConnect, long, 65535))
	if code := readReply(t, c); code != ReplyConnectionRefused {
		t.Fatalf("255-byte name: reply %v", code)
	}
	expectClosed(t, c)
	calls := d.Calls()
	if len(calls) != 1 || calls[0].host != long || calls[0].port != 65535 || calls[0].isolation != isolationKey([]byte(user), []byte(pass)) {
		t.Fatalf("dialer got %v", calls)
	}

	cases := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"name shorter than its length", append(greeting(0), append([]byte{5, 1, 0, 3, 200}, "example.invalid"...)...), []byte{5, 0}},
		{"port missing", append(greeting(0), append([]byte{5, 1, 0, 3, 15}, "example.invalid"...)...), []byte{5, 0}},
		{"garbage after the greeting", append(greeting(0), 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0), []byte{5, 0}},
		{"second greeting as the request", append(greeting(0), greeting(0)...), []byte{5, 0}},
		{"a megabyte of garbage", append(greeting(0), bytes.Repeat([]byte{0xff}, 1<<20)...), []byte{5, 0}},
		{"user/pass longer than its length", append(greeting(2), 1, 5, 'a', 'b'), []byte{5, 2}},
	}
	for _, tc := range cases {
		c := dialProxy(t, s)
		go func() { c.Write(tc.in); c.CloseWrite() }() // the server may close before reading it all
		if got := expectClosed(t, c); !bytes.Equal(got, tc.want) {
			t.Fatalf("%s: server sent %x, want %x", tc.name, got, tc.want)
		}
	}
	if n := len(d.Calls()); n != 1 {
		t.Fatalf("%d dials: %v", n, d.Calls())
	}
	if n := lookups.Load(); n != 0 {
		t.Fatalf("%d local DNS lookups", n)
	}
}

// TestAttackUnsupportedAddressTypesAndCommands: every ATYP other than 1, 3
// and 4 is answered 0x08, every command other than CONNECT 0x07 (whatever
// the address), and nothing else is sent; nothing is dialed or resolved.
func TestAttackUnsupportedAddressTypesAndCommands(t *testing.T) {
	lookups := forbidDNS(t)
	d := &fakeDialer{}
	s := startServer(t, Config{Dialer: d})
	reply := func(code ReplyCode) []byte { return []byte{5, byte(code), 0, 1, 0, 0, 0, 0, 0, 0} }
	for _, atyp := range []byte{0, 2, 5, 6, 0x7f, 0xff} {
		c := dialProxy(t, s)
		write(t, c, append(greeting(0), 5, cmdConnect, 0, atyp, 127, 0, 0, 1, 0, 80))
		c.CloseWrite()
		if got, want := expectClosed(t, c), append([]byte{5, 0}, reply(ReplyAddressNotSupported)...); !bytes.Equal(got, want) {
			t.Errorf("ATYP %d: server sent %x, want %x", atyp, got, want)
		}
	}
	for _, cmd := range []byte{cmdBind, cmdAssociate, 0, 4, 0x80, 0xff} {
		for _, host := range []string{"example.invalid", "127.0.0.1", "::1"} {
			c := dialProxy(t, s)
			write(t, c, append(greeting(0), request(cmd, host, 80)...))
			c.CloseWrite()
			if got, want := expectClosed(t, c), append([]byte{5, 0}, reply(ReplyCommandNotSupported)...); !bytes.Equal(got, want) {
				t.Errorf("command %d to %s: server sent %x, want %x", cmd, host, got, want)
			}
		}
	}
	if n := len(d.Calls()); n != 0 {
		t.Fatalf("dialer called: %v", d.Calls())
	}
	if n := lookups.Load(); n != 0 {
		t.Fatalf("%d local DNS lookups", n)
	}
}

// TestAttackListenAddresses: spellings of a non-loopback listen address
// that a loose check could take for loopback are refused before binding.
func TestAttackListenAddresses(t *testing.T) {
	for _, addr := range []string{"[::ffff:0.0.0.0]:0", "[::ffff:10.0.0.1]:0", "[::ffff:192.0.2.1]:0",
		"127.0.0.1.nip.io:0", "localhost.example:0", "0:0", "0x7f.1:0", "2130706433:0", "[fe80::1%lo]:0", "[::]:0"} {
		s, err := Listen(Config{Addr: addr, Dialer: &fakeDialer{}})
		if !errors.Is(err, ErrNotLoopback) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Listen(%q) = %v, want ErrNotLoopback", addr, err)
		}
	}
	// A loopback address spelled as IPv4-mapped IPv6 is loopback.
	s, err := Listen(Config{Addr: "[::ffff:127.0.0.1]:0", Dialer: &fakeDialer{}})
	if err != nil {
		t.Fatalf("Listen on mapped loopback: %v", err)
	}
	if !isLoopback(s.Addr()) {
		t.Errorf("bound %v", s.Addr())
	}
	s.Close()
}
