package authority

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
)

// Short schedule: a round every 2 s, so a consensus exists within a few
// seconds. The pass/fail of every test below is independent of timing;
// deadlines only bound how long a broken build can hang.
const (
	testInterval  = 2 * time.Second
	testVoteDelay = 500 * time.Millisecond
	testSigDelay  = 500 * time.Millisecond
	testDeadline  = 30 * time.Second
)

func key(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("authority test " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

// testNet is n authorities with listeners on 127.0.0.1:0.
type testNet struct {
	net       *directory.Network
	keys      []ed25519.PrivateKey
	listeners []net.Listener
}

func newTestNet(t *testing.T, n int) *testNet {
	t.Helper()
	tn := &testNet{net: &directory.Network{Name: "authtest"}}
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		k := key(fmt.Sprint(i))
		tn.keys = append(tn.keys, k)
		tn.listeners = append(tn.listeners, ln)
		tn.net.Authorities = append(tn.net.Authorities, directory.AuthorityInfo{
			Name: fmt.Sprintf("auth%d", i), Address: ln.Addr().String(), Identity: k.Public().(ed25519.PublicKey),
		})
	}
	return tn
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// start runs the authorities whose indexes are given and returns them
// and a stop function that cancels them and checks that Run returned nil.
func (tn *testNet) start(t *testing.T, which ...int) ([]*Authority, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var auths []*Authority
	var wg sync.WaitGroup
	errs := make(chan error, len(which))
	for _, i := range which {
		a, err := New(Config{
			Identity: tn.keys[i], Network: tn.net, Name: tn.net.Authorities[i].Name, Listener: tn.listeners[i],
			Interval: testInterval, VoteDelay: testVoteDelay, SigDelay: testSigDelay, Logger: testLogger(t),
			Tester: func(context.Context, directory.ReachabilityTarget) error { return nil },
		})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		auths = append(auths, a)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- a.Run(ctx)
		}()
	}
	var once sync.Once
	return auths, func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			}
		})
	}
}

// relayDescriptors returns n signed descriptors published at now.
func relayDescriptors(t *testing.T, n int, now time.Time) ([][]byte, []directory.RelayID) {
	t.Helper()
	var raws [][]byte
	var ids []directory.RelayID
	for i := 0; i < n; i++ {
		priv := key(fmt.Sprint("relay", i))
		policy, err := directory.ParseExitPolicy("accept *:80, accept *:443, reject *:*")
		if err != nil {
			t.Fatal(err)
		}
		d := &directory.Descriptor{
			Nickname:   fmt.Sprint("relay", i),
			Address:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(10 + i), 0, 1}), 9001),
			Bandwidth:  int64(1000 * (i + 1)),
			ExitPolicy: policy,
			Platform:   "veil test",
			Published:  now,
		}
		d.LinkKey[0], d.OnionKey[0] = byte(i), byte(i)
		d.OnionKeyPQ = make([]byte, directory.OnionKeyPQSize)
		raw, err := d.Sign(priv)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw)
		ids = append(ids, directory.RelayID(priv.Public().(ed25519.PublicKey)))
	}
	return raws, ids
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", testDeadline, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkNoLeaks waits (bounded) for the goroutine count to fall back to
// base.
func checkNoLeaks(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines leaked: %d > %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fetchVerified fetches the consensus from addr and verifies it.
func fetchVerified(c *dirclient.Client, tn *testNet, addr string) (*directory.Consensus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := c.FetchConsensus(ctx, addr)
	if err != nil {
		return nil, err
	}
	return directory.VerifyConsensus(raw, tn.net, time.Now())
}

func TestThreeAuthoritiesPublishConsensus(t *testing.T) {
	base := runtime.NumGoroutine()
	tn := newTestNet(t, 3)
	_, stop := tn.start(t, 0, 1, 2)
	defer stop()

	client := dirclient.New(nil)
	defer client.CloseIdleConnections()
	raws, ids := relayDescriptors(t, 3, time.Now().Truncate(time.Second))
	// relay0 and relay1 upload to every authority; relay2 to one only,
	// so it must never be listed.
	for i, raw := range raws {
		for j, a := range tn.net.Authorities {
			if i == 2 && j > 0 {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := client.UploadDescriptor(ctx, a.Address, raw); err != nil {
				t.Fatalf("upload to %s: %v", a.Name, err)
			}
			cancel()
		}
	}
	for _, a := range tn.net.Authorities {
		waitFor(t, "a verified consensus listing relay0 and relay1 from "+a.Name, func() bool {
			c, err := fetchVerified(client, tn, a.Address)
			return err == nil && c.Relay(ids[0]) != nil && c.Relay(ids[1]) != nil
		})
		c, err := fetchVerified(client, tn, a.Address)
		if err != nil {
			t.Fatal(err)
		}
		if c.Relay(ids[2]) != nil {
			t.Errorf("%s: relay2 listed though only one authority knew it", a.Name)
		}
		r := c.Relay(ids[0])
		if !r.Flags.Has(directory.FlagRunning|directory.FlagValid|directory.FlagExit) || !r.ExitPolicy.AllowsPort(443) {
			t.Errorf("%s: relay0 entry wrong: flags %v policy %v", a.Name, r.Flags, r.ExitPolicy)
		}
	}
	// The convenience fetcher finds it too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := client.FetchVerifiedConsensus(ctx, tn.net, time.Now); err != nil {
		t.Errorf("FetchVerifiedConsensus: %v", err)
	}
	stop()
	client.CloseIdleConnections()
	checkNoLeaks(t, base)
}

func TestMajorityUpSuffices(t *testing.T) {
	tn := newTestNet(t, 3)
	tn.listeners[2].Close() // authority 2 is down
	auths, stop := tn.start(t, 0, 1)
	defer stop()
	client := dirclient.New(nil)
	defer client.CloseIdleConnections()
	waitFor(t, "a consensus with 2 of 3 authorities up", func() bool {
		return auths[0].HasConsensus() && auths[1].HasConsensus()
	})
	raw, err := auths[0].Consensus()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := directory.ParseConsensus(raw)
	if err != nil || len(sc.Signatures) != 2 {
		t.Fatalf("want 2 signatures, got %v (%v)", sc, err)
	}
	if _, err := fetchVerified(client, tn, tn.net.Authorities[1].Address); err != nil {
		t.Errorf("fetched consensus does not verify: %v", err)
	}
}

func TestMinorityCannotPublish(t *testing.T) {
	tn := newTestNet(t, 3)
	tn.listeners[1].Close()
	tn.listeners[2].Close()
	auths, stop := tn.start(t, 0)
	defer stop()
	// Wait until two whole rounds have run; a lone authority of three
	// must never have a consensus to serve.
	waitFor(t, "two rounds", func() bool {
		auths[0].mu.Lock()
		defer auths[0].mu.Unlock()
		return auths[0].roundsDone >= 2
	})
	if auths[0].HasConsensus() {
		t.Fatal("a single authority of three published a consensus")
	}
	rec := httptest.NewRecorder()
	auths[0].Handler().ServeHTTP(rec, httptest.NewRequest("GET", dirclient.PathConsensus, nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET consensus: %d, want 404", rec.Code)
	}
}

func TestHandlerRejections(t *testing.T) {
	tn := newTestNet(t, 3)
	for _, ln := range tn.listeners {
		ln.Close()
	}
	a, err := New(Config{
		Identity: tn.keys[0], Network: tn.net, Name: "auth0", Listener: tn.listeners[0],
		Interval: testInterval, VoteDelay: testVoteDelay, SigDelay: testSigDelay,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := a.Handler()
	do := func(method, path string, body []byte) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, bytes.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	raws, _ := relayDescriptors(t, 1, time.Now().Truncate(time.Second))
	cases := []struct {
		name, method, path string
		body               []byte
		want               int
	}{
		{"good descriptor", "POST", dirclient.PathDescriptor, raws[0], 200},
		{"same descriptor again", "POST", dirclient.PathDescriptor, raws[0], 200},
		{"garbage descriptor", "POST", dirclient.PathDescriptor, []byte("hello\n"), 400},
		{"tampered descriptor", "POST", dirclient.PathDescriptor, bytes.Replace(raws[0], []byte("veil test"), []byte("veil tesT"), 1), 400},
		{"oversize descriptor", "POST", dirclient.PathDescriptor, make([]byte, directory.MaxDescriptorSize+1), 413},
		{"GET descriptor", "GET", dirclient.PathDescriptor, nil, 405},
		{"garbage vote", "POST", dirclient.PathVote, []byte("veil-vote 1\n"), 400},
		{"garbage signature", "POST", dirclient.PathSignature, []byte("x"), 400},
		{"oversize signature", "POST", dirclient.PathSignature, make([]byte, directory.MaxSignatureSize+1), 413},
		{"no consensus yet", "GET", dirclient.PathConsensus, nil, 404},
		{"bad round", "GET", dirclient.PathVote + "/x/y", nil, 400},
		{"unknown authority", "GET", dirclient.RoundPath(dirclient.PathVote, time.Now(), key("nobody").Public().(ed25519.PublicKey)), nil, 404},
		{"vote not held", "GET", dirclient.RoundPath(dirclient.PathVote, time.Now(), tn.net.Authorities[1].Identity), nil, 404},
		{"signature not held", "GET", dirclient.RoundPath(dirclient.PathSignature, time.Now(), tn.net.Authorities[1].Identity), nil, 404},
	}
	for _, tc := range cases {
		code, body := do(tc.method, tc.path, tc.body)
		if code != tc.want {
			t.Errorf("%s: HTTP %d (%s), want %d", tc.name, code, strings.TrimSpace(body), tc.want)
		}
	}
	if a.core.Descriptors() != 1 {
		t.Errorf("holding %d descriptors, want 1", a.core.Descriptors())
	}
}

func TestConfigChecks(t *testing.T) {
	tn := newTestNet(t, 3)
	defer func() {
		for _, ln := range tn.listeners {
			ln.Close()
		}
	}()
	good := Config{
		Identity: tn.keys[0], Network: tn.net, Name: "auth0", Listener: tn.listeners[0],
		Interval: testInterval, VoteDelay: testVoteDelay, SigDelay: testSigDelay,
	}
	if _, err := New(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	bad := map[string]func(*Config){
		"wrong name":         func(c *Config) { c.Name = "auth1" },
		"key not in network": func(c *Config) { c.Identity = key("stranger") },
		"no listener":        func(c *Config) { c.Listener = nil },
		"bad schedule":       func(c *Config) { c.VoteDelay = 2 * time.Second },
		"no network":         func(c *Config) { c.Network = nil },
	}
	for name, mod := range bad {
		c := good
		mod(&c)
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: got %v, want ErrConfig", name, err)
		}
	}
}
