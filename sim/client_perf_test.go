package sim

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestOnionPerf measures what OnionPerf measures on the Tor network, over
// a live loopback testnet (3 authorities, 6 relays): for 50 KiB, 1 MiB and
// 5 MiB downloads through the SOCKS port, the time to first byte and the
// time to the last byte (median and 90th percentile), and the client's
// circuit build times. Each fetch opens a new SOCKS connection (one
// stream); streams share circuits as a browser's would (within
// MaxCircuitDirtiness). It is skipped unless VEIL_ONIONPERF=1; fetches per
// size default to 20 (VEIL_ONIONPERF_N). Run it without -race for numbers:
//
//	VEIL_ONIONPERF=1 go test -run TestOnionPerf -v -count=1 ./sim/
func TestOnionPerf(t *testing.T) {
	if os.Getenv("VEIL_ONIONPERF") != "1" {
		t.Skip("set VEIL_ONIONPERF=1 to run the OnionPerf-style benchmark")
	}
	fetches := 20
	if v, err := strconv.Atoi(os.Getenv("VEIL_ONIONPERF_N")); err == nil && v > 0 {
		fetches = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	n := startE2ENet(t, ctx, 3, 1) // 6 relays, 3 exits
	site := startWebSite(t)
	e := startClient(t, ctx, n, filepath.Join(t.TempDir(), "state"))

	for _, size := range []int{50 << 10, 1 << 20, 5 << 20} {
		site.file(size) // generate before timing
		var ttfb, total []time.Duration
		for range fetches {
			start := time.Now()
			resp, err := socksGet(ctx, e, "", site.url(fmt.Sprintf("/file/%d", size)))
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 32<<10)
			m, err := resp.Body.Read(buf)
			if m == 0 && err != nil {
				t.Fatal(err)
			}
			first := time.Since(start)
			rest, err := io.CopyBuffer(io.Discard, resp.Body, buf)
			resp.Body.Close()
			if err != nil || int(rest)+m != size {
				t.Fatalf("got %d of %d bytes: %v", int(rest)+m, size, err)
			}
			ttfb, total = append(ttfb, first), append(total, time.Since(start))
		}
		t.Logf("%-7s ttfb median %-9v p90 %-9v  total median %-9v p90 %-9v  (%d fetches, median %.1f MB/s)",
			sizeName(size), quantile(ttfb, 0.5), quantile(ttfb, 0.9), quantile(total, 0.5), quantile(total, 0.9),
			fetches, float64(size)/quantile(total, 0.5).Seconds()/1e6)
	}
	// Circuit builds: fresh isolation keys force new circuits.
	for i := range fetches {
		resp, err := socksGet(ctx, e, fmt.Sprintf("build%d", i), site.url("/file/1024"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	builds := e.c.BuildTimes()
	t.Logf("circuit build: median %v p90 %v (%d builds); learned build timeout %v",
		quantile(builds, 0.5), quantile(builds, 0.9), len(builds), e.c.Status().BuildTimeout)
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// quantile returns the q-quantile (nearest rank) of ds, rounded for display.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)].Round(100 * time.Microsecond)
}
