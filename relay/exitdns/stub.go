package exitdns

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Stub is a stub resolver that reports TTLs: it asks the recursive
// resolvers of /etc/resolv.conf for A and AAAA records directly (UDP, TCP
// when the answer is truncated) so the cache can keep answers exactly as
// long as they are valid. Unlike the system resolver it applies no search
// domains and reads no hosts file: an exit resolves names as given, never
// "intranet" as "intranet.corp.example". Safe for concurrent use.
type Stub struct {
	// Servers are tried in order; at most MaxStubServers.
	Servers []netip.AddrPort
	// Rand makes query IDs (crypto/rand if nil).
	Rand io.Reader
	// Dial replaces net.Dialer.DialContext (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

var _ Resolver = (*Stub)(nil)

// Stub limits.
const (
	MaxStubServers = 3
	maxUDPAnswer   = 1232 // EDNS0 payload size we advertise
	maxTCPAnswer   = 65535
)

// ErrNoServers means resolv.conf names no usable nameserver.
var ErrNoServers = errors.New("exitdns: no nameserver configured")

// ParseResolvConf returns the nameservers of a resolv.conf, port 53, at
// most MaxStubServers; zoned addresses are skipped.
func ParseResolvConf(r io.Reader) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10))
	for sc.Scan() && len(out) < MaxStubServers {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || a.Zone() != "" {
			continue
		}
		out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
	}
	if len(out) == 0 {
		return nil, ErrNoServers
	}
	return out, sc.Err()
}

// NewStubFromResolvConf reads path (usually /etc/resolv.conf).
func NewStubFromResolvConf(path string) (*Stub, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	servers, err := ParseResolvConf(f)
	if err != nil {
		return nil, err
	}
	return &Stub{Servers: servers}, nil
}

// Resolve asks each server in turn for host's A and AAAA records. The
// TTL is the smallest of the records returned.
func (s *Stub) Resolve(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	if !ValidName(host) {
		return nil, 0, ErrBadName
	}
	name, err := dnsmessage.NewName(strings.TrimSuffix(host, ".") + ".")
	if err != nil {
		return nil, 0, ErrBadName
	}
	if len(s.Servers) == 0 {
		return nil, 0, ErrNoServers
	}
	var last error = ErrFailed
	for _, srv := range s.Servers[:min(len(s.Servers), MaxStubServers)] {
		type result struct {
			addrs []netip.Addr
			ttl   uint32
			err   error
		}
		res := make(chan result, 2)
		for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
			go func() {
				a, ttl, err := s.query(ctx, srv, name, qt)
				res <- result{a, ttl, err}
			}()
		}
		var addrs []netip.Addr
		ttl := uint32(0)
		notFound, failed := 0, 0
		for range 2 {
			r := <-res
			switch {
			case errors.Is(r.err, ErrNotFound):
				notFound++
			case r.err != nil:
				failed++
				last = r.err
			default:
				addrs = append(addrs, r.addrs...)
				if len(r.addrs) > 0 && (ttl == 0 || r.ttl < ttl) {
					ttl = r.ttl
				}
			}
		}
		switch {
		case len(addrs) > 0:
			return addrs, time.Duration(ttl) * time.Second, nil
		case failed == 0 && notFound > 0:
			return nil, 0, ErrNotFound
		case failed == 0:
			return nil, 0, ErrNotFound // both answered, no address
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, 0, last
}

// query asks srv one question over UDP, then TCP if truncated.
func (s *Stub) query(ctx context.Context, srv netip.AddrPort, name dnsmessage.Name, qt dnsmessage.Type) ([]netip.Addr, uint32, error) {
	var idb [2]byte
	rnd := s.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	if _, err := io.ReadFull(rnd, idb[:]); err != nil {
		return nil, 0, err
	}
	id := binary.BigEndian.Uint16(idb[:])
	q := dnsmessage.Question{Name: name, Type: qt, Class: dnsmessage.ClassINET}
	b := dnsmessage.NewBuilder(make([]byte, 2, 514), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAdditionals()
	var rh dnsmessage.ResourceHeader
	rh.SetEDNS0(maxUDPAnswer, dnsmessage.RCodeSuccess, false)
	b.OPTResource(rh, dnsmessage.OPTResource{})
	msg, err := b.Finish()
	if err != nil {
		return nil, 0, err
	}
	addrs, ttl, trunc, err := s.exchange(ctx, "udp", srv, msg[2:], id, q)
	if err == nil && trunc {
		binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
		addrs, ttl, _, err = s.exchange(ctx, "tcp", srv, msg, id, q)
	}
	return addrs, ttl, err
}

func (s *Stub) exchange(ctx context.Context, network string, srv netip.AddrPort, msg []byte, id uint16, q dnsmessage.Question) ([]netip.Addr, uint32, bool, error) {
	dial := s.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	c, err := dial(ctx, network, srv.String())
	if err != nil {
		return nil, 0, false, ErrFailed
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(msg); err != nil {
		return nil, 0, false, ErrFailed
	}
	var buf []byte
	if network == "udp" {
		buf = make([]byte, maxUDPAnswer)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return nil, 0, false, ErrFailed
			}
			if n >= 2 && binary.BigEndian.Uint16(buf) == id {
				buf = buf[:n]
				break
			}
			// A stray datagram (wrong ID): keep waiting for ours.
		}
	} else {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return nil, 0, false, ErrFailed
		}
		buf = make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, 0, false, ErrFailed
		}
	}
	return parseAnswer(buf, id, q)
}

// parseAnswer checks a response against the question and returns its
// addresses of the asked type and their smallest TTL.
func parseAnswer(buf []byte, id uint16, q dnsmessage.Question) ([]netip.Addr, uint32, bool, error) {
	var p dnsmessage.Parser
	h, err := p.Start(buf)
	if err != nil || h.ID != id || !h.Response {
		return nil, 0, false, ErrFailed
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 || qs[0].Type != q.Type || !strings.EqualFold(qs[0].Name.String(), q.Name.String()) {
		return nil, 0, false, ErrFailed
	}
	if h.Truncated {
		return nil, 0, true, nil
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, 0, false, ErrNotFound
	default:
		return nil, 0, false, ErrFailed
	}
	var out []netip.Addr
	ttl := uint32(0)
	for len(out) < MaxAddrs {
		ah, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, 0, false, ErrFailed
		}
		var a netip.Addr
		switch {
		case ah.Type == dnsmessage.TypeA && q.Type == dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return nil, 0, false, ErrFailed
			}
			a = netip.AddrFrom4(r.A)
		case ah.Type == dnsmessage.TypeAAAA && q.Type == dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return nil, 0, false, ErrFailed
			}
			a = netip.AddrFrom16(r.AAAA)
		default:
			if err := p.SkipAnswer(); err != nil { // CNAMEs and the like
				return nil, 0, false, ErrFailed
			}
			continue
		}
		out = append(out, a)
		if ttl == 0 || ah.TTL < ttl {
			ttl = ah.TTL
		}
	}
	return out, ttl, false, nil
}
