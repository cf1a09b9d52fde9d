package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/linkio"
	"github.com/veilnet/veil/relay/metrics"
)

// startRelay runs a relay built from cfg (listener on 127.0.0.1) and
// returns it, its hop spec and a stop function that waits for Run.
func startRelay(t *testing.T, mod func(*Config)) (*Relay, circuit.HopSpec, context.CancelFunc, chan error) {
	t.Helper()
	var r *Relay
	var spec circuit.HopSpec
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	spec, _ = testRelayWithRun(t, mod, func(rr *Relay) {
		r = rr
		go func() { done <- r.Run(ctx) }()
	})
	return r, spec, cancel, done
}

// testRelayWithRun builds the relay like testRelayWith and hands it to run.
func testRelayWithRun(t *testing.T, mod func(*Config), run func(*Relay)) (circuit.HopSpec, func()) {
	t.Helper()
	_, id, _ := ed25519.GenerateKey(rand.Reader)
	linkKey, _ := crypto.GenerateStaticKey(rand.Reader)
	onion, _ := crypto.GenerateOnionKey(rand.Reader)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, authKey, _ := ed25519.GenerateKey(rand.Reader)
	network := &directory.Network{Name: "t", Authorities: []directory.AuthorityInfo{{Name: "a", Address: "127.0.0.1:1", Identity: authKey.Public().(ed25519.PublicKey)}}}
	adv := ln.Addr().(*net.TCPAddr).AddrPort()
	cfg := Config{Nickname: "t", Identity: id, LinkKey: linkKey, OnionKey: onion, Listener: ln,
		Advertise: adv, ExtendAllowPrivate: true, Network: network, ConsensusInterval: -1}
	cfg.ExitPolicy, _ = directory.ParseExitPolicy("accept *:*")
	cfg.AllowPrivateExit = true
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(r)
	spec := circuit.HopSpec{Identity: [32]byte(id.Public().(ed25519.PublicKey)), LinkKey: linkKey.Public, OnionKey: onion.X25519.Public, OnionKeyPQ: onion.KEMPublic[:], Addr: adv}
	return spec, func() {}
}

// dialFrom opens a raw client link to spec from the local address from.
func dialFrom(t *testing.T, spec circuit.HopSpec, from string) (*linkio.Conn, error) {
	throwaway, _ := crypto.GenerateStaticKey(rand.Reader)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return linkio.Dial(context.Background(), &d, spec.Addr.String(), &throwaway, spec.LinkKey, rand.Reader)
}

// echoRoundTrip opens a stream to echo over h and checks one round trip.
func echoRoundTrip(t *testing.T, h *oneHop, echo uint16) {
	t.Helper()
	id := h.openStream(echo)
	if msg := []byte("still here"); !bytes.Equal(h.echo(id, msg), msg) {
		t.Fatal("the echo differs")
	}
}

// TestCreateFloodFromOneAddress: one address floods CREATEs; beyond its
// token bucket it gets DESTROY(RESOURCELIMIT), and a client on another
// address keeps building circuits and moving data meanwhile.
func TestCreateFloodFromOneAddress(t *testing.T) {
	r, spec, cancel, done := startRelay(t, func(c *Config) { c.CreateRate, c.CreateBurst = 5, 10 })
	defer func() { cancel(); <-done }()
	echo := echoServer(t)

	flood, err := dialFrom(t, spec, "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	var created, refused atomic.Int32
	go flood.ReadLoop(func(c *circuit.Cell) error {
		switch {
		case c.Cmd == circuit.CmdCreated:
			created.Add(1)
		case c.Cmd == circuit.CmdDestroy && circuit.DestroyReason(c.Payload[0]) == circuit.DestroyResourceLimit:
			refused.Add(1)
		}
		return nil
	})
	payloads, err := circuit.NewClientCircuit(time.Now).Create(rand.Reader, spec)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for id := uint32(1); ; id++ {
			select {
			case <-stop:
				return
			default:
			}
			for _, p := range payloads {
				c := circuit.Cell{CircID: circuit.CircIDHighBit | id, Cmd: circuit.CmdCreate, Payload: p}
				if flood.Send(&c) != nil {
					return
				}
			}
			if id%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	// Meanwhile a client elsewhere is served.
	for range 3 {
		link, err := dialFrom(t, spec, "127.0.0.3")
		if err != nil {
			t.Fatal(err)
		}
		h := oneHopOver(t, link, spec)
		echoRoundTrip(t, h, echo.Port())
		link.Close()
	}
	close(stop)
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	if refused.Load() < 100 {
		t.Fatalf("only %d CREATEs refused (%d created)", refused.Load(), created.Load())
	}
	if c := created.Load(); c > 40 {
		t.Fatalf("%d flood circuits created; the bucket allows about 10 + 5/s", c)
	}
	if metricValue(r.metrics.Refusals.WithLabelValues(metrics.RefuseCreateRate)) == 0 {
		t.Fatal("refusals not counted")
	}
	t.Logf("flood: %d created, %d refused", created.Load(), refused.Load())
}

// oneHopOver is dialOneHop over an existing link.
func oneHopOver(t *testing.T, link *linkio.Conn, spec circuit.HopSpec) *oneHop {
	t.Helper()
	h := &oneHop{t: t, link: link, cc: circuit.NewClientCircuit(time.Now), cells: make(chan circuit.Cell, 1024)}
	go link.ReadLoop(func(c *circuit.Cell) error { h.cells <- *c; return nil })
	payloads, err := h.cc.Create(rand.Reader, spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range payloads {
		h.send(circuit.Cell{CircID: testCircID, Cmd: circuit.CmdCreate, Payload: p})
	}
	c := h.next()
	if c.Cmd != circuit.CmdCreated {
		t.Fatalf("got cell %d, want CREATED", c.Cmd)
	}
	if err := h.cc.HandleCreated(&c.Payload); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestLinksPerAddress: one address may hold MaxLinksPerAddress links
// (handshakes included); another address is unaffected.
func TestLinksPerAddress(t *testing.T) {
	r, spec, cancel, done := startRelay(t, func(c *Config) { c.MaxLinksPerAddress = 2 })
	defer func() { cancel(); <-done }()
	var held []net.Conn
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	for range 2 {
		c, err := d.Dial("tcp", spec.Addr.String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for r.perAddr.Count(netipAddr("127.0.0.2")) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	third, err := d.Dial("tcp", spec.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("third link from one address: %v, want EOF", err)
	}
	third.Close()
	link, err := dialFrom(t, spec, "127.0.0.3")
	if err != nil {
		t.Fatalf("another address refused: %v", err)
	}
	link.Close()
	if metricValue(r.metrics.Refusals.WithLabelValues(metrics.RefuseLinksPerAddress)) != 1 {
		t.Fatal("refusal not counted")
	}
}

// TestDrainOnShutdown: once ctx is done the relay refuses new circuits
// but open ones keep working until DrainTimeout, then Run returns.
func TestDrainOnShutdown(t *testing.T) {
	r, spec, cancel, done := startRelay(t, func(c *Config) { c.DrainTimeout = 2 * time.Second })
	echo := echoServer(t)
	h := dialOneHop(t, spec)
	start := time.Now()
	cancel()
	for !r.draining.Load() {
		time.Sleep(5 * time.Millisecond)
	}
	echoRoundTrip(t, h, echo.Port()) // the open circuit still works
	payloads, _ := circuit.NewClientCircuit(time.Now).Create(rand.Reader, spec)
	for _, p := range payloads {
		h.send(circuit.Cell{CircID: testCircID + 1, Cmd: circuit.CmdCreate, Payload: p})
	}
	for {
		c := h.next()
		if c.Cmd == circuit.CmdDestroy && c.CircID == testCircID+1 {
			if circuit.DestroyReason(c.Payload[0]) != circuit.DestroyResourceLimit {
				t.Fatalf("new circuit refused with %d", c.Payload[0])
			}
			break
		}
	}
	if _, err := net.DialTimeout("tcp", spec.Addr.String(), time.Second); err == nil {
		t.Fatal("listener still accepting while draining")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the drain timeout")
	}
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Fatalf("Run returned after %v, before the drain timeout", el)
	}
}

// TestAbortEndsDrain: Abort cuts the drain short.
func TestAbortEndsDrain(t *testing.T) {
	r, spec, cancel, done := startRelay(t, func(c *Config) { c.DrainTimeout = time.Minute })
	dialOneHop(t, spec)
	cancel()
	time.Sleep(100 * time.Millisecond)
	r.Abort()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Abort did not end the drain")
	}
}

// TestOnionKeyRotation: the key rotates on schedule, the previous key is
// accepted through the overlap and then erased; the files in the data
// directory follow, and a restart finds the same keys.
func TestOnionKeyRotation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "relay")
	keys, err := LoadOrCreateKeys(dir, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := keys.OnionCreated
	r := newTestRelay(t, func(c *Config) {
		c.OnionKey, c.OnionKeyCreated, c.DataDir = keys.Onion, keys.OnionCreated, dir
		c.OnionKeyRotation, c.OnionKeyOverlap = 7*24*time.Hour, 24*time.Hour
		c.Now = func() time.Time { return now }
	})
	first := r.currentOnionKey()
	if at := r.nextOnionEvent(); !at.Equal(now.Add(7 * 24 * time.Hour)) {
		t.Fatalf("next event %v", at)
	}
	if changed, _ := r.rotateOnion(now.Add(time.Hour)); changed {
		t.Fatal("rotated early")
	}
	now = now.Add(7 * 24 * time.Hour)
	changed, err := r.rotateOnion(now)
	if err != nil || !changed {
		t.Fatalf("rotation: %v %v", changed, err)
	}
	ks := r.onionKeys()
	if len(ks) != 2 || ks[1] != first || ks[0] == first {
		t.Fatal("want the new key first and the old one second")
	}
	desc, _ := r.Descriptor()
	d, err := directory.ParseDescriptor(desc, now)
	if err != nil || d.OnionKey != ks[0].X25519.Public {
		t.Fatalf("descriptor does not publish the new key: %v", err)
	}
	// A client that still has the old key in its consensus gets through.
	old := circuit.HopSpec{Identity: r.id, OnionKey: first.X25519.Public, OnionKeyPQ: first.KEMPublic[:]}
	cc := circuit.NewClientCircuit(time.Now)
	payloads, _ := cc.Create(rand.Reader, old)
	asm, _, _ := circuit.StartCreate(&payloads[0])
	for _, p := range payloads[1:] {
		asm.Add(&p)
	}
	ht, hdata := asm.Message()
	if _, _, err := circuit.AcceptCreate(rand.Reader, time.Now, r.id, r.onionKeys(), ht, hdata); err != nil {
		t.Fatalf("old key refused during the overlap: %v", err)
	}
	// Restart during the overlap: the same two keys come back.
	k2, err := LoadOrCreateKeys(dir, rand.Reader)
	if err != nil || k2.PrevOnion == nil || k2.Onion.X25519.Public != ks[0].X25519.Public || k2.PrevOnion.X25519.Public != first.X25519.Public {
		t.Fatalf("reload during overlap: %v", err)
	}
	now = now.Add(24 * time.Hour)
	if _, err := r.rotateOnion(now); err != nil {
		t.Fatal(err)
	}
	if len(r.onionKeys()) != 1 {
		t.Fatal("previous key kept after the overlap")
	}
	if _, err := os.Stat(filepath.Join(dir, PrevOnionFile)); !os.IsNotExist(err) {
		t.Fatal("previous key file not erased")
	}
	if _, _, err := circuit.AcceptCreate(rand.Reader, time.Now, r.id, r.onionKeys(), ht, hdata); err == nil {
		t.Fatal("old key still accepted after the overlap")
	}
}

// TestUploadOnChange: a changed exit policy is uploaded at once.
func TestUploadOnChange(t *testing.T) {
	var mu sync.Mutex
	var got []string
	auth := httptest.NewServer(httpHandlerFunc(func(body []byte) {
		d, err := directory.ParseDescriptor(body, time.Now())
		if err == nil {
			mu.Lock()
			got = append(got, d.ExitPolicy.String())
			mu.Unlock()
		}
	}))
	defer auth.Close()
	r, _, cancel, done := startRelay(t, func(c *Config) {
		c.Network.Authorities[0].Address = strings.TrimPrefix(auth.URL, "http://")
		c.UploadInterval = time.Hour
	})
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	p, _ := directory.ParseExitPolicy("accept *:443, reject *:*")
	r.SetExitPolicy(p)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 && got[1] == p.String() })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMetricsEndpoint: the handler serves the documented metric names.
func TestMetricsEndpoint(t *testing.T) {
	r, spec, cancel, done := startRelay(t, nil)
	defer func() { cancel(); <-done }()
	dialOneHop(t, spec)
	srv := httptest.NewServer(r.Metrics().Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"veil_relay_circuits 1", "veil_relay_links{direction=\"inbound\"} 1", "veil_relay_handshakes_total{kind=\"circuit\",result=\"ok\"} 1",
		"veil_relay_cells_read_total", "veil_relay_queued_bytes", "veil_relay_bandwidth_waits_total", "veil_relay_in_consensus -1"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("metrics lack %q", name)
		}
	}
	if strings.Contains(string(body), "127.0.0.1") {
		t.Error("metrics mention an address")
	}
}

// TestNoGoroutineLeak: after Run returns, every goroutine it started is
// gone.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	_, spec, cancel, done := startRelay(t, nil)
	echo := echoServer(t)
	h := dialOneHop(t, spec)
	echoRoundTrip(t, h, echo.Port())
	h.link.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 { // the echo server's accept loop and the client reader may linger
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

type httpHandlerFunc func([]byte)

func (f httpHandlerFunc) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	f(b)
	w.WriteHeader(http.StatusOK)
}

// TestPendingCreateTimeout: a link may have MaxPendingCreates CREATEs
// arriving in fragments; more are refused until the stale ones expire
// after CreateTimeout.
func TestPendingCreateTimeout(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	r, spec, cancel, done := startRelay(t, func(c *Config) { c.Now = clock })
	defer func() { cancel(); <-done }()
	h := dialOneHop(t, spec)
	payloads, err := circuit.NewClientCircuit(time.Now).Create(rand.Reader, spec)
	if err != nil || len(payloads) < 2 {
		t.Fatalf("want a fragmented CREATE: %d payloads, %v", len(payloads), err)
	}
	for i := range MaxPendingCreates {
		h.send(circuit.Cell{CircID: testCircID + 1 + uint32(i), Cmd: circuit.CmdCreate, Payload: payloads[0]})
	}
	over := testCircID + 1 + uint32(MaxPendingCreates)
	h.send(circuit.Cell{CircID: over, Cmd: circuit.CmdCreate, Payload: payloads[0]})
	if c := h.next(); c.Cmd != circuit.CmdDestroy || c.CircID != over || circuit.DestroyReason(c.Payload[0]) != circuit.DestroyResourceLimit {
		t.Fatalf("got cmd %d on %x, want DESTROY(resource limit) for the CREATE beyond the limit", c.Cmd, c.CircID)
	}
	if metricValue(r.metrics.Refusals.WithLabelValues(metrics.RefusePendingCreates)) != 1 {
		t.Fatal("refusal not counted")
	}
	now.Add(int64(CreateTimeout + time.Second))
	fresh := over + 1
	for _, p := range payloads {
		h.send(circuit.Cell{CircID: fresh, Cmd: circuit.CmdCreate, Payload: p})
	}
	if c := h.next(); c.Cmd != circuit.CmdCreated || c.CircID != fresh {
		t.Fatalf("got cmd %d on %x after the stale CREATEs expired, want CREATED", c.Cmd, c.CircID)
	}
}

// syncBuf is a bytes.Buffer safe for a logger and a reader.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogsCarryNoAddresses: even at debug level, the relay's logs name no
// client address and no destination (name or address) unless the
// operator sets LogSensitive.
func TestLogsCarryNoAddresses(t *testing.T) {
	for _, sensitive := range []bool{false, true} {
		var buf syncBuf
		dns := &fakeDNS{names: map[string][]netip.Addr{"secret-destination.example": addrs("127.0.0.1")}}
		_, spec, cancel, done := startRelay(t, func(c *Config) {
			c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			c.LogSensitive = sensitive
			c.DNS = dns
			c.AllowPrivateExit = true
		})
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		closed := ln.Addr().(*net.TCPAddr).AddrPort().Port()
		ln.Close()
		link, err := dialFrom(t, spec, "127.0.0.2")
		if err != nil {
			t.Fatal(err)
		}
		h := oneHopOver(t, link, spec)
		for _, host := range []string{"secret-destination.example", "nx-destination.example"} {
			if _, err := h.cc.OpenStream(host, closed, &h.acts); err != nil {
				t.Fatal(err)
			}
			h.flush()
			h.recv()
			h.acts.Reset()
		}
		link.Close()
		cancel()
		<-done
		logs := buf.String()
		leaked := strings.Contains(logs, "127.0.0.2") || strings.Contains(logs, "destination.example") || strings.Contains(logs, fmt.Sprint(closed))
		if leaked != sensitive {
			t.Fatalf("LogSensitive=%v but leaked=%v:\n%s", sensitive, leaked, logs)
		}
	}
}
