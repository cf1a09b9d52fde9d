package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// TestTestnetEndToEnd starts a whole network in-process over real loopback
// TCP (3 authorities, 6 relays, a client with a SOCKS port), serves random
// files from a local web server and fetches each through the SOCKS port
// with a three-hop circuit, comparing SHA-256 hashes.
func TestTestnetEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	files := map[string][]byte{}
	for name, size := range map[string]int{"1k": 1 << 10, "1m": 1 << 20, "20m": 20 << 20} {
		b := make([]byte, size)
		rand.Read(b)
		files[name] = b
	}
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path[1:]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	})}
	go srv.Serve(web)
	defer srv.Close()

	tn, err := StartTestnet(ctx, TestnetConfig{SocksAddr: "127.0.0.1:0", VotingInterval: 4 * time.Second, Progress: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tn.Close(); err != nil {
			t.Errorf("closing testnet: %v", err)
		}
	}()

	cons := tn.Client.Consensus()
	if len(cons.Relays) != 6 {
		t.Fatalf("consensus lists %d relays, want 6", len(cons.Relays))
	}

	dialer, err := proxy.SOCKS5("tcp", tn.Socks.Addr().String(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.(proxy.ContextDialer).DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
	for _, name := range []string{"1k", "1m", "20m"} {
		start := time.Now()
		resp, err := httpc.Get(fmt.Sprintf("http://%s/%s", web.Addr(), name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: after %d bytes: %v", name, n, err)
		}
		want := sha256.Sum256(files[name])
		if !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("%s: got %d bytes with the wrong hash", name, n)
		}
		t.Logf("%s: %d bytes in %v (%.1f MB/s)", name, n, time.Since(start), float64(n)/time.Since(start).Seconds()/1e6)
	}

	// Every circuit the client holds has three distinct relays in
	// distinct /16s, and ends at an exit.
	paths := tn.Client.CircuitPaths()
	if len(paths) == 0 {
		t.Fatal("client holds no circuits after the downloads")
	}
	for _, p := range paths {
		if len(p) != 3 {
			t.Fatalf("circuit of %d hops", len(p))
		}
		seen := map[netip.Prefix]bool{}
		for _, r := range p {
			pfx, _ := r.Address.Addr().Prefix(16)
			if seen[pfx] {
				t.Fatalf("two hops in %v", pfx)
			}
			seen[pfx] = true
		}
		if p[2].ExitPolicy == nil || !p[2].ExitPolicy.AllowsPort(80) {
			t.Fatalf("last hop %s is not an exit for port 80", p[2].Nickname)
		}
	}
}
