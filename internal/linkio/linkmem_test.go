package linkio

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
)

// TestIdleLinkMemory measures the heap of idle links with readers running,
// with the read buffer released after a quiet spell (as shipped, shortened
// here to 50 ms) and kept
// (as before). Run it with
//
//	VEIL_LINKMEM=1 go test -run TestIdleLinkMemory -v ./internal/linkio/
func TestIdleLinkMemory(t *testing.T) {
	if os.Getenv("VEIL_LINKMEM") != "1" {
		t.Skip("set VEIL_LINKMEM=1 to measure memory per idle link")
	}
	const links = 500
	for _, release := range []time.Duration{50 * time.Millisecond, time.Hour} {
		old := idleReadRelease
		idleReadRelease = release
		before := heapInuse()
		var conns []*Conn
		for range links {
			c, s := tcpPair(t)
			conns = append(conns, c, s)
			go s.ReadLoop(func(*circuit.Cell) error { return nil })
			b := NewBatch() // one cell each, so every reader has read once
			b.Add(&circuit.Cell{CircID: 1, Cmd: circuit.CmdRelay})
			if err := c.WriteBatch(b); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(500*time.Millisecond + min(release, time.Second))
		after := heapInuse()
		t.Logf("release after %v: %d idle links, heap %+.1f KiB per link, %d read buffers held",
			release, links, float64(after-before)/1024/links, ReadBuffersHeld())
		for _, c := range conns {
			c.Close()
		}
		time.Sleep(200 * time.Millisecond)
		idleReadRelease = old
	}
}

func heapInuse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}
