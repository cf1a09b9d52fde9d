package relay

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
)

// The capacity benchmark measures what one relay process can forward, with
// a load generator that costs as little as possible, so that on a small
// machine the relay gets the cores:
//
//   - The relay (TestLoadRelayChild, its own process, GOMAXPROCS set) is
//     the first hop of VEIL_CAPACITY_CIRCS circuits (default 8) that arrive
//     over VEIL_CAPACITY_LINKS client links (default 4) and leave over
//     links to as many sinks. Everything is negotiated for real: link
//     handshakes, hybrid circuit handshakes (CREATE to the relay, EXTEND
//     through it to a sink, which answers with AcceptCreate).
//   - The generator then seals, ahead of time, the whole byte stream of
//     each client link: DROP messages for the sink (two real layers, the
//     sink's and the relay's, then the link's frame seal; DROP is forwarded
//     exactly like DATA and is not subject to congestion control), 127
//     cells per frame, round robin over the link's circuits. Timed, it only
//     writes those bytes, keeping at most VEIL_CAPACITY_WINDOW cells per
//     circuit (default 2048) unaccounted for, so no circuit queue at the
//     relay can overflow.
//   - A sink reads frame headers and counts cells without opening them;
//     it opens one frame in 64 (with the link key and that frame's
//     counter nonce) and checks that it authenticates and carries RELAY
//     cells of its circuits.
//
// So the timed work of the relay is the real forward path (read, open the
// link frame, open its layer, queue, round robin, seal a frame, write); the
// generator's is write(2) and the sinks' is read(2), a header parse and a
// 1/64 sample of the link crypto.
//
//	VEIL_CAPACITY=1 go test -run TestRelayCapacity -v -count=1 ./relay/
//
// It alternates GOMAXPROCS=1 and GOMAXPROCS=2 relays VEIL_CAPACITY_RUNS
// times (default 2), each forwarding VEIL_CAPACITY_MB MiB of frames
// (default 1024), and logs throughput, relay CPU per MiB and the ratio.
// The generator and sinks share the machine with the relay: on 2 cores
// the ratio means something only when nothing else runs.
func TestRelayCapacity(t *testing.T) {
	if os.Getenv("VEIL_CAPACITY") != "1" {
		t.Skip("set VEIL_CAPACITY=1 to run the relay capacity benchmark")
	}
	runs := envInt("VEIL_CAPACITY_RUNS", 2)
	var rates [3][]float64
	for run := range runs {
		for _, procs := range []int{1, 2} {
			rate, cpuPerMiB := capacityRun(t, procs)
			rates[procs] = append(rates[procs], rate)
			t.Logf("run %d, GOMAXPROCS=%d: %.1f MB/s of cells through the relay, relay CPU %.2f ms per MiB", run, procs, rate, cpuPerMiB)
		}
	}
	for i := range rates[1] {
		t.Logf("pair %d: GOMAXPROCS=2 / GOMAXPROCS=1 = %.2f", i, rates[2][i]/rates[1][i])
	}
}

// capSink is a fake next hop: it answers CREATEs, then counts.
type capSink struct {
	spec     circuit.HopSpec
	keys     *Keys
	ln       net.Listener
	expect   int          // circuits to answer before counting
	counted  atomic.Int64 // cells counted in the timed phase
	sampled  atomic.Int64 // frames opened and checked
	failures atomic.Int64
	progress *sync.Cond
}

func newCapSink(t *testing.T, addr string, expect int, progress *sync.Cond) *capSink {
	keys, err := LoadOrCreateKeys(filepath.Join(t.TempDir(), "sink"), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &capSink{keys: keys, ln: ln, expect: expect, progress: progress,
		spec: circuit.HopSpec{Identity: [32]byte(keys.Identity.Public().(ed25519.PublicKey)), LinkKey: keys.Link.Public,
			OnionKey: keys.Onion.X25519.Public, OnionKeyPQ: keys.Onion.KEMPublic[:], Addr: ln.Addr().(*net.TCPAddr).AddrPort()}}
	go s.serve(t)
	return s
}

func (s *capSink) serve(t *testing.T) {
	nc, err := s.ln.Accept()
	if err != nil {
		return
	}
	defer nc.Close()
	l, err := acceptRawLink(nc, &s.keys.Link)
	if err != nil {
		t.Errorf("sink: %v", err)
		return
	}
	buf := make([]byte, circuit.MaxFrameSize)
	var pending []circuit.Cell
	frames := uint64(0) // frames read so far: the recv counter
	ids := map[uint32]bool{}
	asm := map[uint32]*circuit.CreateAssembler{}
	for len(ids) < s.expect {
		for len(pending) == 0 {
			cells, err := l.readCells(buf)
			if err != nil {
				t.Errorf("sink setup: %v", err)
				return
			}
			frames++
			pending = append(pending, cells...)
		}
		c := pending[0]
		pending = pending[1:]
		if c.Cmd != circuit.CmdCreate {
			t.Errorf("sink setup: cell %d", c.Cmd)
			return
		}
		var done bool
		if a := asm[c.CircID]; a != nil {
			done, err = a.Add(&c.Payload)
		} else {
			asm[c.CircID], done, err = circuit.StartCreate(&c.Payload)
		}
		if err != nil || !done {
			continue
		}
		ht, hdata := asm[c.CircID].Message()
		_, created, err := circuit.AcceptCreate(rand.Reader, time.Now, s.spec.Identity, []*crypto.OnionKey{s.keys.Onion}, ht, hdata)
		if err != nil {
			t.Errorf("sink: %v", err)
			return
		}
		ids[c.CircID] = true
		l.writeCells(circuit.Cell{CircID: c.CircID, Cmd: circuit.CmdCreated, Payload: *created})
	}
	block, _ := aes.NewCipher(l.recvKey[:]) // the transport AEAD, docs/spec/link.md §4
	aead, _ := cipher.NewGCM(block)
	var nonce [12]byte
	for {
		ct, err := l.readFrame(buf)
		if err != nil {
			return
		}
		if (frames%64 == 0 || s.sampled.Load() == 0) && frames < circuit.RekeyFrames {
			binary.BigEndian.PutUint64(nonce[4:], frames)
			pt, err := aead.Open(ct[:0], nonce[:], ct, nil)
			ok := err == nil
			for off := 0; ok && off < len(pt); off += circuit.CellSize {
				ok = circuit.Command(pt[off+4]) == circuit.CmdRelay && ids[binary.BigEndian.Uint32(pt[off:])]
			}
			if !ok {
				s.failures.Add(1)
			}
			s.sampled.Add(1)
		}
		frames++
		s.counted.Add(int64((len(ct) - circuit.TagSize) / circuit.CellSize))
		s.progress.L.Lock()
		s.progress.Broadcast()
		s.progress.L.Unlock()
	}
}

// capCirc is one generator circuit.
type capCirc struct {
	id   uint32
	cc   *circuit.ClientCircuit
	acts circuit.ClientActions
}

// capLink is one generator link to the relay and its circuits.
type capLink struct {
	l      *rawLink
	circs  []*capCirc
	stream []byte // the sealed frames of the timed phase
	cells  int64
}

// build creates each circuit at the relay and extends it to sink.
func (cl *capLink) build(relay, sink circuit.HopSpec) error {
	buf := make([]byte, circuit.MaxFrameSize)
	var pending []circuit.Cell
	next := func(c *capCirc) (circuit.Cell, error) {
		cell, err := cl.l.readCell(buf, &pending)
		if err == nil && cell.CircID != c.id {
			err = fmt.Errorf("%w: cell for circuit %x while building %x", errUnexpected, cell.CircID, c.id)
		}
		return cell, err
	}
	for _, c := range cl.circs {
		payloads, err := c.cc.Create(rand.Reader, relay)
		if err != nil {
			return err
		}
		for _, p := range payloads {
			if err := cl.l.writeCells(circuit.Cell{CircID: c.id, Cmd: circuit.CmdCreate, Payload: p}); err != nil {
				return err
			}
		}
		cell, err := next(c)
		if err != nil {
			return err
		}
		if cell.Cmd != circuit.CmdCreated {
			return fmt.Errorf("%w: %d instead of CREATED", errUnexpected, cell.Cmd)
		}
		if err := c.cc.HandleCreated(&cell.Payload); err != nil {
			return err
		}
		c.acts.Reset()
		if err := c.cc.Extend(rand.Reader, sink, &c.acts); err != nil {
			return err
		}
		for j := range c.acts.ToLink {
			c.acts.ToLink[j].CircID = c.id
		}
		if err := cl.l.writeCells(c.acts.ToLink...); err != nil {
			return err
		}
		for c.acts.Reset(); !c.acts.Extended; {
			cell, err := next(c)
			if err != nil {
				return err
			}
			if cell.Cmd != circuit.CmdRelay {
				return fmt.Errorf("%w: %d while extending", errUnexpected, cell.Cmd)
			}
			if err := c.cc.HandleBackward(&cell.Payload, &c.acts); err != nil {
				return err
			}
		}
	}
	return nil
}

// seal precomputes frames of DROP cells, round robin over the circuits.
func (cl *capLink) seal(frames int) {
	cl.stream = make([]byte, 0, frames*circuit.MaxFramedSize)
	cells := make([]circuit.Cell, circuit.MaxCellsPerFrame)
	k := 0
	for range frames {
		for i := range cells {
			c := cl.circs[k%len(cl.circs)]
			k++
			c.acts.Reset()
			if err := c.cc.SendDrop(&c.acts); err != nil {
				panic(err)
			}
			cells[i] = c.acts.ToLink[0]
			cells[i].CircID = c.id
		}
		cl.stream = cl.l.appendFrame(cl.stream, cells)
	}
	cl.cells = int64(frames * circuit.MaxCellsPerFrame)
}

// capacityRun starts a relay with GOMAXPROCS procs, drives it and returns
// MB/s of cells forwarded and the relay's CPU ms per MiB of cells.
func capacityRun(t *testing.T, procs int) (float64, float64) {
	nCircs := envInt("VEIL_CAPACITY_CIRCS", 8)
	nLinks := min(envInt("VEIL_CAPACITY_LINKS", 4), nCircs)
	window := int64(envInt("VEIL_CAPACITY_WINDOW", 2048) * nCircs)
	totalMB := envInt("VEIL_CAPACITY_MB", 1024)
	framesPerLink := totalMB << 20 / circuit.MaxFramedSize / nLinks

	relay := startRelayProcess(t, "127.0.3.1:0", fmt.Sprintf("GOMAXPROCS=%d", procs))
	progress := sync.NewCond(new(sync.Mutex))
	var sinks []*capSink
	var sinkSpecs []circuit.HopSpec
	for i := range nLinks {
		expect := 0 // circuits i, i+nLinks, ...: link i's
		for c := range nCircs {
			if c%nLinks == i {
				expect++
			}
		}
		s := newCapSink(t, fmt.Sprintf("127.0.4.%d:0", i+1), expect, progress)
		sinks, sinkSpecs = append(sinks, s), append(sinkSpecs, s.spec)
	}
	var links []*capLink
	for i := range nLinks {
		l, err := dialRawLink(fmt.Sprintf("127.0.5.%d", i+1), relay.spec.Addr.String(), relay.spec.LinkKey)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.nc.Close() })
		links = append(links, &capLink{l: l})
	}
	for c := range nCircs {
		cl := links[c%nLinks]
		cl.circs = append(cl.circs, &capCirc{id: circuit.CircIDHighBit | uint32(c+1), cc: circuit.NewClientCircuit(time.Now)})
	}
	for i, cl := range links { // link i's circuits go to sink i
		if err := cl.build(relay.spec, sinkSpecs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var total int64
	for _, cl := range links {
		cl.seal(framesPerLink)
		total += cl.cells
	}
	counted := func() int64 {
		var n int64
		for _, s := range sinks {
			n += s.counted.Load()
		}
		return n
	}
	before := relay.stats()
	loadBefore := selfCPU()
	var sent atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	const chunkFrames = 4
	for i, cl := range links {
		// Link i's circuits all end at sink i: its window is theirs.
		window := window * int64(len(cl.circs)) / int64(nCircs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var linkSent int64
			for off := 0; off < len(cl.stream); {
				n := min(chunkFrames*circuit.MaxFramedSize, len(cl.stream)-off)
				cells := int64(n / circuit.MaxFramedSize * circuit.MaxCellsPerFrame)
				progress.L.Lock()
				for linkSent-sinks[i].counted.Load()+cells > window {
					progress.Wait()
				}
				progress.L.Unlock()
				linkSent += cells
				sent.Add(cells)
				if _, err := cl.l.nc.Write(cl.stream[off : off+n]); err != nil {
					t.Errorf("generator: %v", err)
					return
				}
				off += n
			}
		}()
	}
	deadline := time.Now().Add(time.Minute)
	progress.L.Lock()
	for counted() < total && time.Now().Before(deadline) && !t.Failed() {
		waitCond(progress, time.Second)
	}
	progress.L.Unlock()
	took := time.Since(start)
	if got := counted(); got != total {
		st := relay.stats()
		t.Fatalf("sinks counted %d of %d cells in %v (%d sent; relay: %d circuits, %d bytes queued)", got, total, took, sent.Load(), st.Circuits, st.Queued)
	}
	wg.Wait()
	after := relay.stats()
	loadCPU := selfCPU() - loadBefore
	if got := counted(); got != total {
		t.Fatalf("sinks counted %d of %d cells", got, total)
	}
	var sampled int64
	for _, s := range sinks {
		sampled += s.sampled.Load()
		if f := s.failures.Load(); f > 0 {
			t.Fatalf("sink: %d sampled frames failed to open or carried foreign cells", f)
		}
	}
	if sampled == 0 {
		t.Fatal("sinks checked no frame")
	}
	mib := float64(total*circuit.CellSize) / (1 << 20)
	t.Logf("GOMAXPROCS=%d: the relay used %.2f cores, the generator and sinks (this process) %.2f", procs,
		(after.CPU-before.CPU)/took.Seconds(), loadCPU/took.Seconds())
	return float64(total*circuit.CellSize) / took.Seconds() / 1e6, (after.CPU - before.CPU) * 1000 / mib
}

// selfCPU is this process's user and system CPU seconds so far.
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// waitCond waits on c (whose lock is held) for at most d.
func waitCond(c *sync.Cond, d time.Duration) {
	t := time.AfterFunc(d, func() { c.L.Lock(); c.Broadcast(); c.L.Unlock() })
	c.Wait()
	t.Stop()
}
