package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay/exitdns"
)

// fakeDNS answers from a table; names not in it do not exist. A name
// mapped to nil times out (blocks until ctx ends).
type fakeDNS struct {
	names   map[string][]netip.Addr
	ttl     time.Duration
	lookups atomic.Int32
}

var _ exitdns.Resolver = (*fakeDNS)(nil)

func (f *fakeDNS) Resolve(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	f.lookups.Add(1)
	addrs, ok := f.names[host]
	if !ok {
		return nil, 0, exitdns.ErrNotFound
	}
	if addrs == nil {
		<-ctx.Done()
		return nil, 0, exitdns.ErrFailed
	}
	return addrs, f.ttl, nil
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// newTestRelay builds a relay (not running) for unit tests.
func newTestRelay(t testing.TB, mod func(*Config)) *Relay {
	t.Helper()
	_, id, _ := ed25519.GenerateKey(rand.Reader)
	linkKey, _ := crypto.GenerateStaticKey(rand.Reader)
	onion, _ := crypto.GenerateOnionKey(rand.Reader)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	_, authKey, _ := ed25519.GenerateKey(rand.Reader)
	cfg := Config{Nickname: "t", Identity: id, LinkKey: linkKey, OnionKey: onion, Listener: ln,
		Advertise: netip.MustParseAddrPort("203.0.113.7:9001"), ConsensusInterval: -1,
		Network: &directory.Network{Name: "t", Authorities: []directory.AuthorityInfo{{Name: "a", Address: "127.0.0.1:1", Identity: authKey.Public().(ed25519.PublicKey)}}}}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestExitPolicyTable: policies × targets, IPv4 and IPv6, literals and
// names, including public-looking names that resolve (or rebind) to
// loopback, mapped loopback, link-local and private addresses. The check
// is always on the address that would be dialed.
func TestExitPolicyTable(t *testing.T) {
	dns := &fakeDNS{names: map[string][]netip.Addr{
		"www.example.com":        addrs("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
		"v6only.example.com":     addrs("2001:db8:1::10"),
		"rebind.example.com":     addrs("127.0.0.1"),
		"mapped.example.com":     addrs("::ffff:127.0.0.1"),
		"linklocal.example.com":  addrs("fe80::1"),
		"lan.example.com":        addrs("10.1.2.3", "192.168.1.1"),
		"mixed.example.com":      addrs("127.0.0.1", "93.184.215.14"),
		"self.example.com":       addrs("203.0.113.7"),
		"ula.example.com":        addrs("fd00::5"),
		"cgnat.example.com":      addrs("100.64.0.9"),
		"nat64.example.com":      addrs("64:ff9b::7f00:1"),
		"v4compat.example.com":   addrs("::7f00:1"),
		"unspecified.example.co": addrs("0.0.0.0"),
		"slow.example.com":       nil,
	}}
	cases := []struct {
		policy string
		host   string
		port   uint16
		want   circuit.EndReason
		first  string // the first address allowed, if any
	}{
		{"accept *:*", "93.184.215.14", 443, 0, "93.184.215.14"},
		{"accept *:*", "www.example.com", 443, 0, "93.184.215.14"},
		{"accept *:*", "2001:db8:1::10", 80, 0, "2001:db8:1::10"},
		{"accept *:*", "v6only.example.com", 80, 0, "2001:db8:1::10"},
		{"accept *:*", "127.0.0.1", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "::1", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "::ffff:127.0.0.1", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "rebind.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "mapped.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "linklocal.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "lan.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "ula.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "cgnat.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "nat64.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "v4compat.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "unspecified.example.co", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "self.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "203.0.113.7", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "mixed.example.com", 80, 0, "93.184.215.14"}, // the private answer is skipped
		{"accept *:*", "fe80::1%eth0", 80, circuit.EndExitPolicy, ""},
		{"accept *:*", "nx.example.com", 80, circuit.EndResolveFailed, ""},
		{"accept *:*", "bad name!", 80, circuit.EndResolveFailed, ""},
		{"accept *:*", "slow.example.com", 80, circuit.EndTimeout, ""},
		{"accept *:80, accept *:443, reject *:*", "www.example.com", 443, 0, "93.184.215.14"},
		{"accept *:80, accept *:443, reject *:*", "www.example.com", 22, circuit.EndExitPolicy, ""},
		{"accept *:80, accept *:443, reject *:*", "rebind.example.com", 443, circuit.EndExitPolicy, ""},
		{"reject 93.184.215.0/24:*, accept *:*", "www.example.com", 443, 0, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"},
		{"reject 93.184.215.0/24:*, accept *:*", "93.184.215.14", 443, circuit.EndExitPolicy, ""},
		{"reject [2001:db8::]/32:*, accept *:*", "v6only.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept [::]/0:443, reject *:*", "www.example.com", 443, 0, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"},
		{"accept [::]/0:443, reject *:*", "93.184.215.14", 443, circuit.EndExitPolicy, ""},
		{"accept *4:1000-2000, reject *:*", "93.184.215.14", 1500, 0, "93.184.215.14"},
		{"accept *4:1000-2000, reject *:*", "93.184.215.14", 2001, circuit.EndExitPolicy, ""},
		{"accept *4:1000-2000, reject *:*", "2001:db8:1::10", 1500, circuit.EndExitPolicy, ""},
		{"reject *:*", "www.example.com", 80, circuit.EndExitPolicy, ""},
		{"accept private:*, accept *:*", "10.1.2.3", 80, circuit.EndExitPolicy, ""}, // the private rule wins over the policy
	}
	for _, tc := range cases {
		t.Run(tc.policy+"/"+tc.host, func(t *testing.T) {
			p, err := directory.ParseExitPolicy(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			r := newTestRelay(t, func(c *Config) { c.ExitPolicy = p; c.DNS = dns; c.DNSTimeout = 50 * time.Millisecond })
			targets, reason := r.exitTargets(context.Background(), tc.host, tc.port)
			if reason != tc.want {
				t.Fatalf("reason %d, want %d (targets %v)", reason, tc.want, targets)
			}
			if tc.first != "" && (len(targets) == 0 || targets[0] != netip.MustParseAddr(tc.first)) {
				t.Fatalf("targets %v, want %s first", targets, tc.first)
			}
		})
	}
}

// TestExitDNSCache: a second lookup within the TTL is served from the
// cache; a name that does not exist is cached negatively.
func TestExitDNSCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	dns := &fakeDNS{names: map[string][]netip.Addr{"www.example.com": addrs("93.184.215.14")}, ttl: time.Minute}
	p, _ := directory.ParseExitPolicy("accept *:*")
	r := newTestRelay(t, func(c *Config) { c.ExitPolicy = p; c.DNS = dns; c.Now = func() time.Time { return now } })
	for range 3 {
		if _, reason := r.exitTargets(context.Background(), "www.example.com", 80); reason != 0 {
			t.Fatal(reason)
		}
		if _, reason := r.exitTargets(context.Background(), "nx.example.com", 80); reason != circuit.EndResolveFailed {
			t.Fatal(reason)
		}
	}
	if n := dns.lookups.Load(); n != 2 {
		t.Fatalf("%d lookups, want 2 (one per name)", n)
	}
	now = now.Add(2 * time.Minute)
	r.exitTargets(context.Background(), "www.example.com", 80)
	if n := dns.lookups.Load(); n != 3 {
		t.Fatalf("%d lookups after the TTL, want 3", n)
	}
}

// TestExitRebindingEndToEnd: through a real circuit, a public-looking
// name the resolver maps to loopback is refused with END(exit policy),
// while on a test network (AllowPrivateExit) the same name reaches the
// echo server: the refusal comes from the address check after DNS.
func TestExitRebindingEndToEnd(t *testing.T) {
	echo := echoServer(t)
	dns := &fakeDNS{names: map[string][]netip.Addr{"echo.example.com": addrs("127.0.0.1")}}
	for _, allow := range []bool{false, true} {
		spec, stop := testRelayWith(t, func(c *Config) {
			c.ExitPolicy, _ = directory.ParseExitPolicy("accept *:*")
			c.AllowPrivateExit = allow
			c.DNS = dns
		})
		h := dialOneHop(t, spec)
		if _, err := h.cc.OpenStream("echo.example.com", echo.Port(), &h.acts); err != nil {
			t.Fatal(err)
		}
		h.flush()
		h.recv()
		if allow {
			if len(h.acts.Connected) != 1 {
				t.Fatalf("private exit allowed: want CONNECTED, got ends %+v", h.acts.Ends)
			}
		} else if len(h.acts.Ends) != 1 || h.acts.Ends[0].Reason != circuit.EndExitPolicy {
			t.Fatalf("want END(exit policy), got connected=%v ends=%+v", h.acts.Connected, h.acts.Ends)
		}
		h.link.Close()
		stop()
	}
}

// TestExitEndReasons: a closed port gives END(connect refused).
func TestExitEndReasons(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	spec, stop := testRelay(t, "accept *:*", true)
	defer stop()
	h := dialOneHop(t, spec)
	if _, err := h.cc.OpenStream("127.0.0.1", closed.Port(), &h.acts); err != nil {
		t.Fatal(err)
	}
	h.flush()
	h.recv()
	if len(h.acts.Ends) != 1 || h.acts.Ends[0].Reason != circuit.EndConnectRefused {
		t.Fatalf("want END(connect refused), got %+v", h.acts.Ends)
	}
}
