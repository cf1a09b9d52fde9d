package relay

import (
	"bufio"
	"bytes"
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/internal/linkio"
)

// relayProc is a relay daemon in a process of its own (TestLoadRelayChild),
// so its CPU time is its own.
type relayProc struct {
	spec  circuit.HopSpec
	stats func() childStats
}

// startRelayProcess starts a relay process listening on addr ("host:0");
// env adds variables (e.g. "GOMAXPROCS=1"). It stops with the test.
func startRelayProcess(t *testing.T, addr string, env ...string) *relayProc {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "relay")
	keys, err := LoadOrCreateKeys(dir, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadRelayChild$")
	cmd.Env = append(os.Environ(), "VEIL_LOAD_CHILD="+dir, "VEIL_LOAD=", "VEIL_LOAD_ADDR="+addr)
	cmd.Env = append(cmd.Env, env...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
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
	return &relayProc{
		spec: circuit.HopSpec{Identity: [32]byte(keys.Identity.Public().(ed25519.PublicKey)), LinkKey: keys.Link.Public,
			OnionKey: keys.Onion.X25519.Public, OnionKeyPQ: keys.Onion.KEMPublic[:], Addr: netip.MustParseAddrPort(relayAddr)},
		stats: func() childStats {
			resp, err := http.Get("http://" + statsAddr + "/stats")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var s childStats
			json.NewDecoder(resp.Body).Decode(&s)
			return s
		},
	}
}

// chainCirc is a client circuit driven directly over a linkio link.
type chainCirc struct {
	mu    sync.Mutex
	link  *linkio.Conn
	id    uint32
	cc    *circuit.ClientCircuit
	acts  circuit.ClientActions
	step  chan struct{} // a hop was added or the stream connected
	got   int
	check func(off int, b []byte) bool
	bad   bool
	done  chan struct{}
}

func (c *chainCirc) flush() {
	for i := range c.acts.ToLink {
		c.acts.ToLink[i].CircID = c.id
		c.link.Send(&c.acts.ToLink[i])
	}
	c.acts.ToLink = c.acts.ToLink[:0]
}

func (c *chainCirc) handle(cell *circuit.Cell) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acts.Reset()
	switch cell.Cmd {
	case circuit.CmdCreated:
		if err := c.cc.HandleCreated(&cell.Payload); err != nil {
			return err
		}
		c.step <- struct{}{}
		return nil
	case circuit.CmdRelay:
	default:
		return fmt.Errorf("unexpected cell %d", cell.Cmd)
	}
	if err := c.cc.HandleBackward(&cell.Payload, &c.acts); err != nil {
		return err
	}
	if c.acts.Extended || len(c.acts.Connected) > 0 {
		c.step <- struct{}{}
	}
	for _, d := range c.acts.Data {
		if !c.check(c.got, d.Data) {
			c.bad = true
		}
		c.got += len(d.Data)
		c.cc.StreamConsumed(d.StreamID, 1, &c.acts)
	}
	if len(c.acts.Finished) > 0 || len(c.acts.Ends) > 0 {
		close(c.done)
	}
	c.flush()
	return nil
}

// buildChain builds a circuit through hops over a new link to hops[0] and
// opens a stream to target; check is called for each piece of stream data
// with its offset.
func buildChain(t *testing.T, hops []circuit.HopSpec, target netip.AddrPort, check func(off int, b []byte) bool) *chainCirc {
	t.Helper()
	throwaway, _ := crypto.GenerateStaticKey(rand.Reader)
	var d net.Dialer
	link, err := linkio.Dial(context.Background(), &d, hops[0].Addr.String(), &throwaway, hops[0].LinkKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	c := &chainCirc{link: link, id: circuit.CircIDHighBit | 1, cc: circuit.NewClientCircuit(time.Now),
		step: make(chan struct{}, 1), done: make(chan struct{}), check: check}
	go link.ReadLoop(c.handle)
	wait := func(what string) {
		select {
		case <-c.step:
		case <-link.Done():
			t.Fatalf("%s: link closed", what)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: timed out", what)
		}
	}
	c.mu.Lock()
	payloads, err := c.cc.Create(rand.Reader, hops[0])
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range payloads {
		link.Send(&circuit.Cell{CircID: c.id, Cmd: circuit.CmdCreate, Payload: p})
	}
	wait("create")
	for _, h := range hops[1:] {
		c.mu.Lock()
		c.acts.Reset()
		err := c.cc.Extend(rand.Reader, h, &c.acts)
		c.flush()
		c.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		wait("extend")
	}
	c.mu.Lock()
	c.acts.Reset()
	_, err = c.cc.OpenStream(target.Addr().String(), target.Port(), &c.acts)
	c.flush()
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	wait("begin")
	return c
}

// TestChainThroughput measures one bulk stream through three relay
// daemons, each in its own process on its own loopback address: this
// process is the client (circuit.ClientCircuit over a linkio link: the
// same core and link driver as package client) and the target, which
// sends VEIL_CHAIN_MB MiB (default 100) of random bytes that the client
// checks. It logs MB/s and each relay's CPU per relayed MiB (every relay
// on the circuit relays every byte once). Skipped unless VEIL_CHAIN=1:
//
//	VEIL_CHAIN=1 go test -run TestChainThroughput -v -count=1 ./relay/
//
// VEIL_CHAIN_RUNS (default 3) streams are measured one after another,
// each on a new circuit.
func TestChainThroughput(t *testing.T) {
	if os.Getenv("VEIL_CHAIN") != "1" {
		t.Skip("set VEIL_CHAIN=1 to run the relay chain benchmark")
	}
	size := envInt("VEIL_CHAIN_MB", 100) << 20
	runs := envInt("VEIL_CHAIN_RUNS", 3)
	data := make([]byte, size)
	rand.Read(data)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			go func() { c.Write(data); c.Close() }()
		}
	}()
	var procs []*relayProc
	var hops []circuit.HopSpec
	for i := range 3 {
		var env []string
		if prof := os.Getenv("VEIL_CHAIN_CPUPROFILE"); prof != "" { // PREFIX.guard, .middle, .exit
			env = append(env, "VEIL_LOAD_CPUPROFILE="+prof+"."+[]string{"guard", "middle", "exit"}[i])
		}
		if n := os.Getenv("VEIL_CHAIN_GOMAXPROCS"); n != "" { // the relays' only
			env = append(env, "GOMAXPROCS="+n)
		}
		p := startRelayProcess(t, fmt.Sprintf("127.%d.0.1:0", 101+i), env...)
		procs, hops = append(procs, p), append(hops, p.spec)
	}
	for run := range runs {
		before := make([]childStats, len(procs))
		for i, p := range procs {
			before[i] = p.stats()
		}
		start := time.Now()
		c := buildChain(t, hops, target.Addr().(*net.TCPAddr).AddrPort(),
			func(off int, b []byte) bool { return off+len(b) <= size && bytes.Equal(b, data[off:off+len(b)]) })
		select {
		case <-c.done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("run %d: stream incomplete after 2 minutes", run)
		}
		took := time.Since(start)
		c.mu.Lock()
		got, bad := c.got, c.bad
		c.mu.Unlock()
		if bad || got != size {
			t.Fatalf("run %d: got %d of %d bytes (wrong bytes: %v)", run, got, size, bad)
		}
		line := fmt.Sprintf("run %d: %d MiB in %v (circuit build included): %.1f MB/s; relay CPU ms per relayed MiB:", run, size>>20,
			took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6)
		for i, p := range procs {
			s := p.stats()
			cpu, sys := s.CPU-before[i].CPU, s.SysCPU-before[i].SysCPU
			line += fmt.Sprintf(" %.2f (%.0f%% system)", cpu*1000/float64(size>>20), 100*sys/cpu)
		}
		t.Log(line)
		c.link.Close()
	}
}
