package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// TestBulkThroughput measures one bulk stream through a live testnet (3
// authorities, 6 relays, the client and its SOCKS port, all in this
// process over loopback TCP): a raw TCP target on 127.0.0.1 writes
// VEIL_BULK_MB MiB (default 20) and closes; the test reads it through the
// SOCKS port, checks every byte and logs MB/s and the process's CPU per
// MiB (every node of the network and the target together). It repeats
// VEIL_BULK_RUNS times (default 5) on one testnet, each a new stream, and
// logs the median. Skipped unless VEIL_BULK=1:
//
//	VEIL_BULK=1 go test -run TestBulkThroughput -v -count=1 ./sim/
func TestBulkThroughput(t *testing.T) {
	if os.Getenv("VEIL_BULK") != "1" {
		t.Skip("set VEIL_BULK=1 to run the bulk-throughput benchmark")
	}
	size := bulkEnv("VEIL_BULK_MB", 20) << 20
	runs := bulkEnv("VEIL_BULK_RUNS", 5)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

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
			go func() {
				c.Write(data)
				c.Close()
			}()
		}
	}()

	tn, err := StartTestnet(ctx, TestnetConfig{SocksAddr: "127.0.0.1:0", VotingInterval: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	dialer, err := proxy.SOCKS5("tcp", tn.Socks.Addr().String(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	var rates []float64
	buf := make([]byte, 64<<10)
	for i := range runs {
		cpu0 := processCPU()
		start := time.Now()
		c, err := dialer.(proxy.ContextDialer).DialContext(ctx, "tcp", target.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if got+n > size || !bytes.Equal(buf[:n], data[got:got+n]) {
					t.Fatalf("run %d: wrong bytes at offset %d", i, got)
				}
				got += n
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("run %d: after %d bytes: %v", i, got, err)
			}
		}
		c.Close()
		took := time.Since(start)
		cpu := processCPU() - cpu0
		if got != size {
			t.Fatalf("run %d: got %d of %d bytes", i, got, size)
		}
		rate := float64(size) / took.Seconds() / 1e6
		rates = append(rates, rate)
		t.Logf("run %d: %d MiB in %v: %.1f MB/s, process CPU %.2f s (%.1f ms per MiB, all nodes)", i, size>>20,
			took.Round(time.Millisecond), rate, cpu.Seconds(), cpu.Seconds()*1000/float64(size>>20))
	}
	slices.Sort(rates)
	t.Logf("median %.1f MB/s over %d runs (min %.1f, max %.1f)", rates[len(rates)/2], runs, rates[0], rates[len(rates)-1])
}

func bulkEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// processCPU is this process's user plus system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
