package relay

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/linkio"
)

// The load test (docs/benchmarks.md): one relay, in a process of its own
// so its memory and CPU are measured alone, carries 1,000 concurrent
// circuits and 5,000 concurrent streams over loopback from this process,
// which plays the clients and the echo target. It is skipped unless
// VEIL_LOAD=1:
//
//	VEIL_LOAD=1 go test -run TestLoad -v -timeout 20m ./relay/
//
// Knobs: VEIL_LOAD_CIRCUITS (1000), VEIL_LOAD_STREAMS (per circuit, 5),
// VEIL_LOAD_BYTES (per stream and direction, 16384).

// childStats is what the relay process reports after a full GC.
type childStats struct {
	HeapInuse  uint64
	Goroutines int
	RSS        uint64  // bytes
	CPU        float64 // seconds, user + system
	SysCPU     float64 // seconds, system only
	Circuits   int
	Queued     int64
}

// TestLoadRelayChild is the relay process of TestLoad.
func TestLoadRelayChild(t *testing.T) {
	dir := os.Getenv("VEIL_LOAD_CHILD")
	if dir == "" {
		t.Skip("run by TestLoad")
	}
	keys, err := LoadOrCreateKeys(dir, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	addr := os.Getenv("VEIL_LOAD_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, authKey, _ := ed25519.GenerateKey(rand.Reader)
	policy, _ := directory.ParseExitPolicy("accept *:*")
	r, err := New(Config{Nickname: "load", Identity: keys.Identity, LinkKey: keys.Link, OnionKey: keys.Onion, Listener: ln,
		Advertise: ln.Addr().(*net.TCPAddr).AddrPort(), ExitPolicy: policy, AllowPrivateExit: true, ConsensusInterval: -1,
		ExtendAllowPrivate: true, // the chain and capacity benchmarks extend between loopback relays
		UploadInterval:     time.Hour,
		Network:            &directory.Network{Name: "t", Authorities: []directory.AuthorityInfo{{Name: "a", Address: "127.0.0.1:1", Identity: authKey.Public().(ed25519.PublicKey)}}}})
	if err != nil {
		t.Fatal(err)
	}
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		runtime.GC() // a second cycle frees what finalizers released
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		s := childStats{HeapInuse: ms.HeapInuse, Goroutines: runtime.NumGoroutine(), RSS: rss(),
			CPU: float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9, SysCPU: float64(ru.Stime.Nano()) / 1e9, Circuits: r.circuitCount(), Queued: r.queued.Load()}
		json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("/heap", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		pprof.Lookup("heap").WriteTo(w, 0)
	})
	go http.Serve(hl, mux)
	if p := os.Getenv("VEIL_LOAD_CPUPROFILE"); p != "" { // profile the relay process alone
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	fmt.Printf("LOAD %s %s\n", ln.Addr(), hl.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	cancel()
	<-done
}

func rss() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// loadClient drives many one-hop circuits over a few links.
type loadClient struct {
	t     *testing.T
	mu    sync.Mutex
	circs map[*linkio.Conn]map[uint32]*loadCirc
}

type loadCirc struct {
	mu      sync.Mutex
	link    *linkio.Conn
	id      uint32
	cc      *circuit.ClientCircuit
	acts    circuit.ClientActions
	created chan struct{}
	streams map[uint16]*loadStream
}

type loadStream struct {
	connected chan struct{}
	writable  chan struct{}
	got       int
	want      int
	done      chan struct{}
	ended     bool
}

// flush sends the queued cells. c.mu is held.
func (c *loadCirc) flush() {
	for i := range c.acts.ToLink {
		c.acts.ToLink[i].CircID = c.id
		c.link.Send(&c.acts.ToLink[i])
	}
	c.acts.ToLink = c.acts.ToLink[:0]
}

// handle processes one cell for c.
func (c *loadCirc) handle(cell *circuit.Cell) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch cell.Cmd {
	case circuit.CmdCreated:
		if c.cc.HandleCreated(&cell.Payload) == nil {
			close(c.created)
		}
		return
	case circuit.CmdRelay:
	default:
		return
	}
	c.acts.Reset()
	if c.cc.HandleBackward(&cell.Payload, &c.acts) != nil {
		return
	}
	for _, id := range c.acts.Connected {
		if s := c.streams[id]; s != nil {
			close(s.connected)
		}
	}
	data := c.acts.Data
	for _, d := range data {
		if s := c.streams[d.StreamID]; s != nil {
			s.got += len(d.Data)
			c.cc.StreamConsumed(d.StreamID, 1, &c.acts)
			if s.got >= s.want && !s.ended {
				s.ended = true
				close(s.done)
			}
		}
	}
	for _, id := range c.acts.Writable {
		for sid, s := range c.streams {
			if id == 0 || id == sid {
				select {
				case s.writable <- struct{}{}:
				default:
				}
			}
		}
	}
	c.flush()
}

func (lc *loadClient) readLink(link *linkio.Conn) {
	link.ReadLoop(func(cell *circuit.Cell) error {
		lc.mu.Lock()
		c := lc.circs[link][cell.CircID]
		lc.mu.Unlock()
		if c != nil {
			c.handle(cell)
		}
		return nil
	})
}

// TestLoad measures one relay under 1,000 circuits and 5,000 streams.
func TestLoad(t *testing.T) {
	if os.Getenv("VEIL_LOAD") == "" {
		t.Skip("set VEIL_LOAD=1 to run the load test")
	}
	nCircs := envInt("VEIL_LOAD_CIRCUITS", 1000)
	perCirc := envInt("VEIL_LOAD_STREAMS", 5)
	nBytes := envInt("VEIL_LOAD_BYTES", 16384)
	const nLinks = 10

	dir := filepath.Join(t.TempDir(), "relay")
	keys, err := LoadOrCreateKeys(dir, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadRelayChild$")
	cmd.Env = append(os.Environ(), "VEIL_LOAD_CHILD="+dir, "VEIL_LOAD=")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	var relayAddr, statsAddr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "LOAD" {
			relayAddr, statsAddr = f[1], f[2]
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if relayAddr == "" {
		t.Fatal("relay process did not start")
	}
	stats := func() childStats {
		resp, err := http.Get("http://" + statsAddr + "/stats")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s childStats
		json.NewDecoder(resp.Body).Decode(&s)
		return s
	}
	spec := circuit.HopSpec{Identity: [32]byte(keys.Identity.Public().(ed25519.PublicKey)), LinkKey: keys.Link.Public,
		OnionKey: keys.Onion.X25519.Public, OnionKeyPQ: keys.Onion.KEMPublic[:], Addr: netip.MustParseAddrPort(relayAddr)}
	echo := echoServer(t)
	time.Sleep(200 * time.Millisecond)
	base := stats()

	// Phase 1: circuits, over nLinks links from distinct addresses (the
	// CREATE limit is per address).
	lc := &loadClient{t: t, circs: map[*linkio.Conn]map[uint32]*loadCirc{}}
	var links []*linkio.Conn
	for i := range nLinks {
		throwaway, _ := crypto.GenerateStaticKey(rand.Reader)
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i+1))}}
		link, err := linkio.Dial(context.Background(), &d, relayAddr, &throwaway, spec.LinkKey, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		defer link.Close()
		links = append(links, link)
		lc.circs[link] = map[uint32]*loadCirc{}
		go lc.readLink(link)
	}
	time.Sleep(100 * time.Millisecond)
	withLinks := stats()
	circs := make([]*loadCirc, nCircs)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range nCircs {
		link := links[i%nLinks]
		c := &loadCirc{link: link, id: circuit.CircIDHighBit | uint32(i+1), cc: circuit.NewClientCircuit(time.Now),
			created: make(chan struct{}), streams: map[uint16]*loadStream{}}
		circs[i] = c
		lc.mu.Lock()
		lc.circs[link][c.id] = c
		lc.mu.Unlock()
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.mu.Lock()
			payloads, err := c.cc.Create(rand.Reader, spec)
			c.mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
			for _, p := range payloads {
				link.Send(&circuit.Cell{CircID: c.id, Cmd: circuit.CmdCreate, Payload: p})
			}
			select {
			case <-c.created:
			case <-time.After(60 * time.Second):
				t.Error("circuit not created in 60 s")
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	buildTime := time.Since(start)
	withCircs := stats()
	if p := os.Getenv("VEIL_LOAD_HEAP_CIRCUITS"); p != "" { // heap profile with the circuits open
		if resp, err := http.Get("http://" + statsAddr + "/heap"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			os.WriteFile(p, b, 0o644)
		}
	}

	// Phase 2: perCirc streams per circuit, all open at once, each
	// echoing nBytes.
	start = time.Now()
	payload := make([]byte, nBytes)
	rand.Read(payload)
	type opened struct {
		c  *loadCirc
		id uint16
		s  *loadStream
	}
	var all []opened
	for _, c := range circs {
		c.mu.Lock()
		for range perCirc {
			c.acts.Reset()
			id, err := c.cc.OpenStream("127.0.0.1", echo.Port(), &c.acts)
			if err != nil {
				c.mu.Unlock()
				t.Fatal(err)
			}
			s := &loadStream{connected: make(chan struct{}), writable: make(chan struct{}, 1), want: nBytes, done: make(chan struct{})}
			c.streams[id] = s
			c.flush()
			all = append(all, opened{c, id, s})
		}
		c.mu.Unlock()
	}
	for _, o := range all {
		select {
		case <-o.s.connected:
		case <-time.After(60 * time.Second):
			t.Fatal("stream not connected in 60 s")
		}
	}
	openTime := time.Since(start)
	withStreams := stats()
	start = time.Now()
	for _, o := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := 0; off < len(payload); {
				o.c.mu.Lock()
				o.c.acts.Reset()
				n, err := o.c.cc.PackageData(o.id, payload[off:], &o.c.acts)
				o.c.flush()
				o.c.mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
				off += n
				if off < len(payload) {
					select {
					case <-o.s.writable:
					case <-time.After(30 * time.Second):
						t.Error("stream stalled")
						return
					}
				}
			}
			select {
			case <-o.s.done:
			case <-time.After(120 * time.Second):
				t.Error("echo incomplete after 120 s")
			}
		}()
	}
	wg.Wait()
	dataTime := time.Since(start)
	afterData := stats()

	// Phase 3: close everything; memory must return to its baseline.
	for _, l := range links {
		l.Close()
	}
	var after childStats
	deadline := time.Now().Add(30 * time.Second)
	for {
		after = stats()
		if (after.Circuits == 0 && after.Goroutines <= base.Goroutines+2) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if p := os.Getenv("VEIL_LOAD_HEAP"); p != "" {
		resp, err := http.Get("http://" + statsAddr + "/heap")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			os.WriteFile(p, b, 0o644)
		}
	}
	nStreams := len(all)
	relayedMB := float64(2*nStreams*nBytes) / 1e6 // payload bytes through the relay, both directions
	t.Logf("relay process, 2 cores, %d circuits over %d links, %d streams of %d bytes each way", nCircs, nLinks, nStreams, nBytes)
	t.Logf("baseline:        heap %6.1f MiB  rss %6.1f MiB  goroutines %d", mib(base.HeapInuse), mib(base.RSS), base.Goroutines)
	t.Logf("%5d links:      heap %6.1f MiB  rss %6.1f MiB  (idle: read buffers (%d bytes) and write batches are pooled, taken while a link is busy)", nLinks, mib(withLinks.HeapInuse), mib(withLinks.RSS), circuit.MaxFramedSize)
	t.Logf("%5d circuits:   heap %6.1f MiB  rss %6.1f MiB  → %.1f KiB heap per circuit (built in %v, relay CPU %.2fs)", nCircs,
		mib(withCircs.HeapInuse), mib(withCircs.RSS), float64(int64(withCircs.HeapInuse)-int64(withLinks.HeapInuse))/float64(nCircs)/1024, buildTime.Round(time.Millisecond), withCircs.CPU-withLinks.CPU)
	t.Logf("+%5d streams:  heap %6.1f MiB  rss %6.1f MiB  goroutines %d → %.1f KiB heap per stream (opened in %v)", nStreams,
		mib(withStreams.HeapInuse), mib(withStreams.RSS), withStreams.Goroutines, float64(int64(withStreams.HeapInuse)-int64(withCircs.HeapInuse))/float64(nStreams)/1024, openTime.Round(time.Millisecond))
	t.Logf("data: %.1f MB relayed in %v, relay CPU %.2fs → %.1f ms CPU per relayed MB", relayedMB, dataTime.Round(time.Millisecond),
		afterData.CPU-withStreams.CPU, (afterData.CPU-withStreams.CPU)*1000/relayedMB)
	t.Logf("after close:     heap %6.1f MiB  rss %6.1f MiB  goroutines %d  circuits %d  queued %d B", mib(after.HeapInuse), mib(after.RSS), after.Goroutines, after.Circuits, after.Queued)
	if after.Circuits != 0 || after.Queued != 0 {
		t.Fatalf("after closing: %d circuits, %d bytes queued", after.Circuits, after.Queued)
	}
	// The Go runtime never frees goroutine descriptors (about 450 bytes
	// each, kept for reuse), and maps keep their peak size: allow for
	// those and some fragmentation, nothing more.
	allowed := base.HeapInuse + uint64(withStreams.Goroutines)*1024 + 12<<20
	if after.HeapInuse > allowed {
		t.Fatalf("heap %d after closing, baseline %d (allowed %d): not back to baseline", after.HeapInuse, base.HeapInuse, allowed)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
