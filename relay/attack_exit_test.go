package relay

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/directory"
)

// dialLog records every connection the relay tries to open. Its Control
// hook runs before connect(2) and refuses anything outside loopback, so a
// regression in the exit checks makes this test fail without sending a
// packet off the machine.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

var errNotLoopback = errors.New("test: refusing a dial outside loopback")

func (d *dialLog) control(_, address string, _ syscall.RawConn) error {
	d.mu.Lock()
	d.addrs = append(d.addrs, address)
	d.mu.Unlock()
	if ap, err := netip.ParseAddrPort(address); err != nil || !ap.Addr().Unmap().IsLoopback() {
		return errNotLoopback
	}
	return nil
}

func (d *dialLog) dials() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// TestAttackExitToPrivateAddresses: an exit whose policy accepts
// everything, on a public network (AllowPrivateExit off), is asked for
// private, loopback, link-local and own addresses in every spelling the
// policy claims to cover: IP literals, IPv4-mapped IPv6 (::ffff:127.0.0.1,
// ::ffff:10.0.0.1), IPv4-compatible IPv6, NAT64 and 6to4 embeddings of
// private IPv4, names that resolve to any of those, and a name that
// rebinds (public when the client RESOLVEs it, loopback when it BEGINs).
// Each BEGIN is answered END(exit policy) and the exit never tries to
// connect: the dialer records no attempt and the loopback target accepts
// nothing.
func TestAttackExitToPrivateAddresses(t *testing.T) {
	hold := newHoldServer(t)
	dns := &fakeDNS{names: map[string][]netip.Addr{
		"loop.example":     addrs("127.0.0.1"),
		"loop6.example":    addrs("::1"),
		"mapped.example":   addrs("::ffff:127.0.0.1"),
		"mapped10.example": addrs("::ffff:10.0.0.1"),
		"lan.example":      addrs("10.0.0.1", "192.168.1.1", "172.16.0.1"),
		"meta.example":     addrs("169.254.169.254"),
		"nat64.example":    addrs("64:ff9b::a00:1"),
		"6to4.example":     addrs("2002:7f00:1::1"),
		"compat.example":   addrs("::7f00:1"),
		"ula.example":      addrs("fd00::1"),
		"localhost":        addrs("127.0.0.1", "::1"),
	}}
	// rebind.example: a public address for the client's RESOLVE, then
	// loopback for the exit's own lookup at BEGIN (TTL 0, cache off).
	rebind := &rebindDNS{fakeDNS: dns, first: addrs("192.0.2.10"), then: addrs("127.0.0.1")}
	var log dialLog
	var r *Relay
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	spec, _ := testRelayWithRun(t, func(c *Config) {
		c.ExitPolicy, _ = directory.ParseExitPolicy("accept *:*")
		c.AllowPrivateExit = false
		c.DNS, c.DNSCacheSize = rebind, -1
	}, func(rr *Relay) {
		r = rr
		r.dialer.Control = log.control
		go func() { done <- r.Run(ctx) }()
	})
	defer func() { cancel(); <-done }()

	hosts := []string{
		"127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::",
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:192.168.0.1",
		"::7f00:1", "::a00:1", // IPv4-compatible
		"64:ff9b::7f00:1", "64:ff9b::a00:1", // NAT64
		"2002:7f00:1::1", "2002:a00:1::1", // 6to4
		"10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
		"fe80::1", "fd00::1", "fec0::1", "224.0.0.1", "ff02::1",
		"localhost", "loop.example", "loop6.example", "mapped.example", "mapped10.example",
		"lan.example", "meta.example", "nat64.example", "6to4.example", "compat.example",
		"ula.example",
	}
	f := forgeCircuit(t, spec, "127.0.0.2", circuit.CircIDHighBit|1)
	for i, host := range hosts {
		id := uint16(i + 1)
		f.begin(id, host, hold.addr.Port())
		m := f.recv()
		if m.Cmd != circuit.RelayEnd || m.StreamID != id || len(m.Data) != 1 || circuit.EndReason(m.Data[0]) != circuit.EndExitPolicy {
			t.Errorf("%s: relay command %d on stream %d data %x, want END(exit policy)", host, m.Cmd, m.StreamID, m.Data)
		}
	}

	// DNS rebinding: the client's RESOLVE sees a public address...
	data, _ := circuit.EncodeResolve("rebind.example")
	f.sendMsg(circuit.RelayMsg{Cmd: circuit.RelayResolve, StreamID: 1000, Data: data})
	m := f.recv()
	status, answer, err := circuit.DecodeResolved(m.Data)
	if m.Cmd != circuit.RelayResolved || err != nil || status != 0 || len(answer) != 1 || answer[0].Addr != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("RESOLVE: command %d status %d answer %v %v", m.Cmd, status, answer, err)
	}
	// ...and the BEGIN that follows is refused on the loopback answer.
	f.begin(1001, "rebind.example", hold.addr.Port())
	if m := f.recv(); m.Cmd != circuit.RelayEnd || circuit.EndReason(m.Data[0]) != circuit.EndExitPolicy {
		t.Fatalf("rebinding name: relay command %d data %x, want END(exit policy)", m.Cmd, m.Data)
	}

	if d := log.dials(); len(d) != 0 {
		t.Fatalf("the exit tried to connect to %v", d)
	}
	if hold.accepted.Load() != 0 {
		t.Fatal("the loopback target was reached")
	}
}

// rebindDNS answers rebind.example with first, then with then; other
// names from fakeDNS.
type rebindDNS struct {
	*fakeDNS
	mu          sync.Mutex
	n           int
	first, then []netip.Addr
}

func (d *rebindDNS) Resolve(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	if host != "rebind.example" {
		return d.fakeDNS.Resolve(ctx, host)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	if d.n == 1 {
		return d.first, 0, nil
	}
	return d.then, 0, nil
}
