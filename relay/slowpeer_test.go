package relay

import (
	"bufio"
	"context"
	"crypto/rand"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/relay/metrics"
)

// bulkServer serves size bytes of a fixed pseudo-random pattern on every
// connection (size < 0: without end, until the peer closes).
func bulkServer(t *testing.T, size int) (uint16, []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	chunk := make([]byte, 64<<10)
	rand.Read(chunk)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for sent := 0; size < 0 || sent < size; {
					n := len(chunk)
					if size >= 0 {
						n = min(n, size-sent)
					}
					if _, err := c.Write(chunk[:n]); err != nil {
						return
					}
					sent += n
				}
			}()
		}
	}()
	var want []byte
	for len(want) < size {
		want = append(want, chunk[:min(len(chunk), size-len(want))]...)
	}
	return uint16(ln.Addr().(*net.TCPAddr).Port), want
}

// smallSendBuffers makes the relay's accepted connections keep small
// kernel send buffers (a test listener wrapper: the relay's code is
// unchanged), so that what a peer does not read queues in the relay,
// where the memory cap applies, rather than in the kernel.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

// slowReadAttack is an attacker's link from 127.0.0.2 that opened n
// circuits, asked the exit for an endless download on each, and reads
// nothing more. Its receive buffer is small (set before connecting, so
// the window it advertises stays small), so the kernel absorbs little of
// what the relay sends.
func slowReadAttack(t *testing.T, spec circuit.HopSpec, n int, endless uint16) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")},
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return serr
		}}
	nc, err := d.Dial("tcp", spec.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	throwaway, _ := crypto.GenerateStaticKey(rand.Reader)
	hs, msg1, _ := circuit.NewLinkInitiator(rand.Reader, &throwaway, spec.LinkKey)
	rawMsg(nc, msg1)
	l, err := rawHandshake(nc, bufio.NewReaderSize(nc, 4096), hs)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, circuit.MaxFrameSize)
	var pending, begins []circuit.Cell
	for i := range n {
		id := circuit.CircIDHighBit | uint32(i+1)
		cc := circuit.NewClientCircuit(time.Now)
		payloads, _ := cc.Create(rand.Reader, spec)
		var cells []circuit.Cell
		for _, p := range payloads {
			cells = append(cells, circuit.Cell{CircID: id, Cmd: circuit.CmdCreate, Payload: p})
		}
		if err := l.writeCells(cells...); err != nil {
			t.Fatal(err)
		}
		c, err := l.readCell(buf, &pending)
		if err != nil || c.Cmd != circuit.CmdCreated {
			t.Fatalf("circuit %d: cell %d, %v", i, c.Cmd, err)
		}
		if err := cc.HandleCreated(&c.Payload); err != nil {
			t.Fatal(err)
		}
		var acts circuit.ClientActions
		if _, err := cc.OpenStream("127.0.0.1", endless, &acts); err != nil {
			t.Fatal(err)
		}
		for _, c := range acts.ToLink {
			c.CircID = id
			begins = append(begins, c)
		}
	}
	for len(begins) > 0 {
		k := min(len(begins), circuit.MaxCellsPerFrame)
		if err := l.writeCells(begins[:k]...); err != nil {
			t.Fatal(err)
		}
		begins = begins[k:]
	}
	return nc
}

// peakQueued samples r's queued bytes every millisecond until stop is
// called, which returns the largest value seen.
func peakQueued(r *Relay) (stop func() int64) {
	var peak atomic.Int64
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if q := r.queued.Load(); q > peak.Load() {
				peak.Store(q)
			}
			select {
			case <-quit:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return func() int64 { close(quit); wg.Wait(); return peak.Load() }
}

const slowReadCircuits = 48

// startSlowReadRelay starts a relay for the slow-reader attacks: a
// memory cap of maxMemory, CREATEs not rate-limited, and small socket
// send buffers so that a peer that stops reading stalls its link soon.
func startSlowReadRelay(t *testing.T, maxMemory int64) (*Relay, circuit.HopSpec, context.CancelFunc, chan error) {
	t.Helper()
	return startRelay(t, func(c *Config) {
		c.MaxMemory = maxMemory
		c.CreateBurst = 1000
		c.Listener = smallSendBuffers{c.Listener}
	})
}

// TestAttackSlowReader: an attacker opens circuits, asks the exit for an
// endless download on each and never reads its link again. Each stalled
// circuit queues at most one congestion window; past the memory cap the
// OOM handler closes circuits until the relay is back under it; a client
// elsewhere is served while the attack goes on; when the attacker leaves,
// nothing stays queued. (The write-stall deadline that closes a link
// whose peer reads nothing for StalledWrite is linkio's,
// linkio.TestWriteBatchStalledPeer.) (An honest bulk download
// during the attack: slowpeer_gap_test.go.)
func TestAttackSlowReader(t *testing.T) {
	const maxMemory = 256 << 10
	r, spec, cancel, done := startSlowReadRelay(t, maxMemory)
	defer func() { cancel(); <-done }()
	endless, _ := bulkServer(t, -1)
	echo := echoServer(t)
	stop := peakQueued(r)
	nc := slowReadAttack(t, spec, slowReadCircuits, endless)
	waitFor(t, func() bool { return metricValue(r.metrics.Refusals.WithLabelValues(metrics.RefuseOOM)) > 0 })

	link, err := dialFrom(t, spec, "127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, oneHopOver(t, link, spec), echo.Port())
	link.Close()

	// Once the handler has run, the relay is back under its cap (without
	// it, the stalled circuits would hold about all their windows).
	waitFor(t, func() bool { return r.queued.Load() <= maxMemory })
	peak := stop()
	// Between the moment the cap is passed and the OOM handler's
	// goroutine running, the exits keep queueing; what bounds the peak
	// is congestion control: a circuit whose client sends no SENDME
	// queues at most one window (without it, up to maxCircQueue cells).
	bound := int64(slowReadCircuits) * circuit.CwndInit * circuit.CellSize
	t.Logf("peak queued %d bytes (cap %d, window bound %d), %v circuits closed by the OOM handler",
		peak, maxMemory, bound, metricValue(r.metrics.Refusals.WithLabelValues(metrics.RefuseOOM)))
	if peak > bound {
		t.Fatalf("peak queued %d bytes, more than one window per circuit (%d)", peak, bound)
	}
	nc.Close()
	waitFor(t, func() bool { return r.circuitCount() == 0 && r.queued.Load() == 0 })
}
