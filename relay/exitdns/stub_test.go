package exitdns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeServer answers on 127.0.0.1 over UDP and TCP:
//
//	www.example.com    A 93.184.215.14 (TTL 300), AAAA 2001:db8::1 (TTL 120)
//	cname.example.com  CNAME www.example.com, A 93.184.215.14 (TTL 50)
//	nx.example.com     NXDOMAIN
//	big.example.com    truncated over UDP; A 192.0.2.7 over TCP
//	stray.example.com  a datagram with the wrong ID first, then the answer
//	fail.example.com   SERVFAIL
type fakeServer struct {
	addr netip.AddrPort
	udp  net.PacketConn
	tcp  net.Listener
}

func startFakeServer(t *testing.T) *fakeServer {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	tcp, err := net.Listen("tcp", udp.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), udp: udp, tcp: tcp}
	t.Cleanup(func() { udp.Close(); tcp.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, out := range answer(buf[:n], false) {
				udp.WriteTo(out, from)
			}
		}
	}()
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				io.ReadFull(c, q)
				for _, out := range answer(q, true) {
					binary.BigEndian.PutUint16(l[:], uint16(len(out)))
					c.Write(append(l[:], out...))
				}
			}()
		}
	}()
	return s
}

func answer(query []byte, tcp bool) [][]byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	name := strings.TrimSuffix(q.Name.String(), ".")
	rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true}
	var out [][]byte
	build := func(hdr dnsmessage.Header, add func(b *dnsmessage.Builder)) []byte {
		b := dnsmessage.NewBuilder(nil, hdr)
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		if add != nil {
			add(&b)
		}
		m, _ := b.Finish()
		return m
	}
	a := func(ip [4]byte, ttl uint32) func(b *dnsmessage.Builder) {
		return func(b *dnsmessage.Builder) {
			if q.Type == dnsmessage.TypeA {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: ttl}, dnsmessage.AResource{A: ip})
			}
		}
	}
	switch name {
	case "www.example.com":
		out = append(out, build(rh, func(b *dnsmessage.Builder) {
			if q.Type == dnsmessage.TypeA {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 300}, dnsmessage.AResource{A: [4]byte{93, 184, 215, 14}})
			} else {
				b.AAAAResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 120}, dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("2001:db8::1").As16()})
			}
		}))
	case "cname.example.com":
		out = append(out, build(rh, func(b *dnsmessage.Builder) {
			target := dnsmessage.MustNewName("www.example.com.")
			b.CNAMEResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 600}, dnsmessage.CNAMEResource{CNAME: target})
			if q.Type == dnsmessage.TypeA {
				b.AResource(dnsmessage.ResourceHeader{Name: target, Class: dnsmessage.ClassINET, TTL: 50}, dnsmessage.AResource{A: [4]byte{93, 184, 215, 14}})
			}
		}))
	case "nx.example.com":
		rh.RCode = dnsmessage.RCodeNameError
		out = append(out, build(rh, nil))
	case "fail.example.com":
		rh.RCode = dnsmessage.RCodeServerFailure
		out = append(out, build(rh, nil))
	case "big.example.com":
		if !tcp {
			rh.Truncated = true
			out = append(out, build(rh, nil))
		} else {
			out = append(out, build(rh, a([4]byte{192, 0, 2, 7}, 90)))
		}
	case "stray.example.com":
		wrong := rh
		wrong.ID++
		out = append(out, build(wrong, a([4]byte{10, 0, 0, 1}, 90)), build(rh, a([4]byte{192, 0, 2, 8}, 90)))
	}
	return out
}

func TestStubResolver(t *testing.T) {
	srv := startFakeServer(t)
	s := &Stub{Servers: []netip.AddrPort{srv.addr}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, ttl, err := s.Resolve(ctx, "www.example.com")
	if err != nil || len(addrs) != 2 || ttl != 120*time.Second {
		t.Fatalf("www: %v ttl %v %v; want both families, TTL 120s", addrs, ttl, err)
	}
	if addrs, ttl, err := s.Resolve(ctx, "cname.example.com"); err != nil || len(addrs) != 1 || ttl != 50*time.Second {
		t.Fatalf("cname: %v ttl %v %v", addrs, ttl, err)
	}
	if _, _, err := s.Resolve(ctx, "nx.example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("nx: %v", err)
	}
	if _, _, err := s.Resolve(ctx, "fail.example.com"); !errors.Is(err, ErrFailed) {
		t.Fatalf("servfail: %v", err)
	}
	if addrs, _, err := s.Resolve(ctx, "big.example.com"); err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.7") {
		t.Fatalf("truncated answer not retried over TCP: %v %v", addrs, err)
	}
	if addrs, _, err := s.Resolve(ctx, "stray.example.com"); err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.8") {
		t.Fatalf("stray datagram accepted: %v %v", addrs, err)
	}
	if _, _, err := s.Resolve(ctx, "bad name"); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	// A server that never answers: the context's deadline bounds the wait.
	silent, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer silent.Close()
	s2 := &Stub{Servers: []netip.AddrPort{silent.LocalAddr().(*net.UDPAddr).AddrPort()}}
	sctx, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer scancel()
	start := time.Now()
	if _, _, err := s2.Resolve(sctx, "www.example.com"); !errors.Is(err, ErrFailed) || time.Since(start) > 2*time.Second {
		t.Fatalf("silent server: %v after %v", err, time.Since(start))
	}
}

func TestParseResolvConf(t *testing.T) {
	got, err := ParseResolvConf(strings.NewReader("# c\nsearch corp.example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver ::1\noptions edns0\nnameserver 9.9.9.9\nnameserver 1.1.1.1\n"))
	if err != nil || len(got) != 3 || got[0].String() != "127.0.0.53:53" || got[1].String() != "[::1]:53" || got[2].String() != "9.9.9.9:53" {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := ParseResolvConf(strings.NewReader("search x\n")); !errors.Is(err, ErrNoServers) {
		t.Fatal(err)
	}
}

// FuzzParseAnswer: a DNS response from the network never panics the
// parser, and an accepted one yields at most MaxAddrs addresses.
func FuzzParseAnswer(f *testing.F) {
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("www.example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7})
	b.StartQuestions()
	b.Question(q)
	query, _ := b.Finish()
	for _, m := range answer(query, false) {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		addrs, _, _, err := parseAnswer(msg, 7, q)
		if err == nil && len(addrs) > MaxAddrs {
			t.Fatalf("%d addresses", len(addrs))
		}
	})
}
