package sim

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/veilnet/veil/client"
)

var slogDiscard = slog.New(slog.DiscardHandler)

// TestClientEndToEnd runs the client's user-facing guarantees over one
// live loopback network of 9 relays (relays 4..9 can be stopped): curl and
// headless Chromium through the SOCKS port, SOCKS isolation, the Go API,
// a download surviving its exit (or middle) being killed, a guard going
// down, and (in a separate process) no local name lookup at all.
// Subtests that kill relays run last.
func TestClientEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	n := startE2ENet(t, ctx, 6, 2) // relays 4 and 5 are exits, 6..9 middles
	site := startWebSite(t)

	t.Run("curl", func(t *testing.T) { testCurl(t, ctx, n, site) })
	t.Run("chromium", func(t *testing.T) { testChromium(t, ctx, n, site) })
	t.Run("isolation", func(t *testing.T) { testIsolation(t, ctx, n, site) })
	t.Run("go api", func(t *testing.T) { testGoAPI(t, ctx, n, site) })
	t.Run("no local dns", func(t *testing.T) { testNoLocalDNS(t, ctx, n, site) })
	t.Run("exit or middle killed", func(t *testing.T) { testRelayKilled(t, ctx, n, site) })
	t.Run("guard down", func(t *testing.T) { testGuardDown(t, ctx, n, site) })

	// Every client and SOCKS server above was closed by its subtest's
	// cleanup: none of their goroutines may be left.
	if leaked := waitNoGoroutines(5*time.Second, "veil/client.", "veil/socks."); leaked != "" {
		t.Fatalf("goroutines left after Close:\n%s", leaked)
	}
}

// waitNoGoroutines polls until no goroutine has a frame containing one of
// the markers, or limit passes; it returns the offending stacks.
func waitNoGoroutines(limit time.Duration, markers ...string) string {
	deadline := time.Now().Add(limit)
	for {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var bad []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, m := range markers {
				if strings.Contains(g, "github.com/"+m) && !strings.Contains(g, "_test.go") {
					bad = append(bad, g)
					break
				}
			}
		}
		if len(bad) == 0 || time.Now().After(deadline) {
			return strings.Join(bad, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func curlPath(t *testing.T) string {
	p, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	return p
}

func testCurl(t *testing.T, ctx context.Context, n *e2eNet, site *webSite) {
	curl := curlPath(t)
	e := startClient(t, ctx, n, "")
	proxyArg := e.socks.Addr().String()
	for _, size := range []int{1 << 10, 1 << 20} {
		for _, user := range []string{"", "alice:secret"} {
			args := []string{"-sS", "--max-time", "60", "--socks5-hostname", proxyArg, site.url(fmt.Sprintf("/file/%d", size))}
			if user != "" {
				args = append(args, "--proxy-user", user)
			}
			out, err := exec.CommandContext(ctx, curl, args...).Output()
			if err != nil {
				t.Fatalf("curl %v: %v", args, err)
			}
			if sha256.Sum256(out) != site.fileHash(size) {
				t.Fatalf("curl got %d bytes with the wrong hash", len(out))
			}
		}
	}
	// The proxy got the name, not an address.
	for _, h := range e.dialed() {
		if !strings.HasPrefix(h, "localhost:") {
			t.Fatalf("dialer was handed %q, want the hostname", h)
		}
	}
	// A closed port at the target: the SOCKS reply says "connection refused"
	// (0x05), which curl reports.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, curl, "-sS", "--max-time", "60", "--socks5-hostname", proxyArg, "http://"+closed+"/")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 97 {
		t.Fatalf("curl to a closed port: %v, %s", err, out)
	}
	if !strings.Contains(strings.ToLower(string(out)), "refused") && !strings.Contains(string(out), "(5)") {
		t.Fatalf("curl's message does not show 'connection refused': %s", out)
	}
	t.Logf("closed port: %s", strings.TrimSpace(string(out)))
}

// chromiumPath finds Debian's chromium. Without it the test skips, except
// under CI=true, where .ci/run installs it and its absence is a failure.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed but CI=true (.ci/run installs it)")
	}
	t.Skip("chromium not installed")
	return ""
}

func testChromium(t *testing.T, ctx context.Context, n *e2eNet, site *webSite) {
	chromium := chromiumPath(t)
	e := startClient(t, ctx, n, "")
	before := site.hitCount("/img/1.png") + site.hitCount("/img/2.png") + site.hitCount("/img/3.png")
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
		"--disable-domain-reliability", "--disable-client-side-phishing-detection", "--disable-default-apps",
		"--disable-extensions", "--no-default-browser-check", "--no-pings", "--disable-breakpad",
		"--metrics-recording-only", "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
		"--user-data-dir="+t.TempDir(),
		"--proxy-server=socks5://"+e.socks.Addr().String(), "--proxy-bypass-list=<-loopback>",
		"--virtual-time-budget=20000", "--dump-dom", site.url("/"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	dom := string(out)
	if !strings.Contains(dom, "Hello through veil") || !strings.Contains(dom, "3 images loaded, width 64") {
		t.Fatalf("page not loaded with its images through the proxy; DOM:\n%s\nstderr:\n%s", dom, stderr.String())
	}
	after := site.hitCount("/img/1.png") + site.hitCount("/img/2.png") + site.hitCount("/img/3.png")
	if after-before < 3 {
		t.Fatalf("the site served %d images", after-before)
	}
	// The page's connections went through the proxy, by name. (Anything
	// else Chromium tried on its own was refused by the test's dialer.)
	hosts, ours := e.dialed(), 0
	for _, h := range hosts {
		if h == "localhost:"+site.port() {
			ours++
		} else {
			t.Logf("chromium also asked the proxy for %q (refused)", h)
		}
	}
	if ours == 0 {
		t.Fatal("chromium did not fetch the page through the SOCKS proxy")
	}
	t.Logf("chromium loaded the page and 3 images over %d SOCKS connections", ours)
}

// socksGet fetches url through the SOCKS server as user (no auth if ""),
// returning the response for the caller to read and close.
func socksGet(ctx context.Context, e *e2eClient, user, url string) (*http.Response, error) {
	var auth *proxy.Auth
	if user != "" {
		auth = &proxy.Auth{User: user, Password: "pw"}
	}
	d, err := proxy.SOCKS5("tcp", e.socks.Addr().String(), auth, proxy.Direct)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext, DisableKeepAlives: true}
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func testIsolation(t *testing.T, ctx context.Context, n *e2eNet, site *webSite) {
	e := startClient(t, ctx, n, "")
	// Streams held open on /slow: alice twice, bob once.
	var resps []*http.Response
	defer func() {
		for _, r := range resps {
			r.Body.Close()
		}
	}()
	open := func(user string) {
		r, err := socksGet(ctx, e, user, site.url("/slow"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r.Body, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		resps = append(resps, r)
	}
	streamsPerCircuit := func() []int {
		var counts []int
		for _, cs := range e.c.Status().Circuits {
			if cs.Streams > 0 {
				counts = append(counts, cs.Streams)
			}
		}
		slices.Sort(counts)
		return counts
	}
	open("alice")
	open("bob")
	if got := streamsPerCircuit(); !slices.Equal(got, []int{1, 1}) {
		t.Fatalf("alice and bob: streams per busy circuit %v, want [1 1] (two circuits)", got)
	}
	open("alice")
	if got := streamsPerCircuit(); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("alice's second stream: streams per busy circuit %v, want [1 2] (shares alice's circuit only)", got)
	}
	open("")
	if got := streamsPerCircuit(); !slices.Equal(got, []int{1, 1, 2}) {
		t.Fatalf("no-auth stream: %v, want [1 1 2] (a third circuit)", got)
	}
}

func testGoAPI(t *testing.T, ctx context.Context, n *e2eNet, site *webSite) {
	e := startClient(t, ctx, n, "")
	hc := e.c.HTTPClient(client.HTTPOptions{Isolation: "go", Timeout: time.Minute})
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(site.url("/file/100000"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || sha256.Sum256(b) != site.fileHash(100000) {
		t.Fatalf("Go API fetch: %d bytes, %v", len(b), err)
	}
	tr := e.c.HTTPTransport(client.HTTPOptions{})
	if tr.Proxy != nil || tr.DialContext == nil {
		t.Fatal("transport must dial through veil and use no proxy")
	}
	// Dial with an IP literal target.
	conn, err := e.c.Dial(ctx, "tcp", net.JoinHostPort("127.0.0.1", site.port()))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /file/10 HTTP/1.0\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	reply, err := io.ReadAll(conn)
	conn.Close()
	if err != nil || !strings.HasPrefix(string(reply), "HTTP/1.0 200") {
		t.Fatalf("raw stream reply %q, %v", reply, err)
	}
}

// testNoLocalDNS runs `veil client` as its own process with
// GODEBUG=netdns=go+2, which makes Go's resolver print a line for every
// name lookup (hosts file included), sends curl through it with
// hostnames, and checks that the client process looked up nothing. It also
// checks the CLI: progress lines, "ready", `veil client status`, and the
// state directory's permissions.
func testNoLocalDNS(t *testing.T, ctx context.Context, n *e2eNet, site *webSite) {
	curl := curlPath(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "veil")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/veilnet/veil/cmd/veil")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building veil: %v\n%s", err, out)
	}
	state := filepath.Join(dir, "state")
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, "client", "--network", filepath.Join(n.tn.Dir, "network.toml"),
		"--socks", "127.0.0.1:0", "--state", state, "--status-interval", "2s")
	cmd.Env = append(os.Environ(), "GODEBUG=netdns=go+2")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var socksAddr string
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if a, ok := strings.CutPrefix(sc.Text(), "ready: SOCKS5 proxy on "); ok {
			socksAddr = a
			break
		}
	}
	if socksAddr == "" {
		t.Fatalf("no ready line; stdout %q, stderr:\n%s", lines, stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	for _, host := range []string{"localhost", "LOCALHOST", "localhost.", "127.0.0.1"} {
		url := "http://" + net.JoinHostPort(host, site.port()) + "/file/1000"
		out, err := exec.CommandContext(ctx, curl, "-sS", "--max-time", "60", "--socks5-hostname", socksAddr, url).Output()
		if err != nil || sha256.Sum256(out) != site.fileHash(1000) {
			t.Fatalf("curl %s: %v (%d bytes)", url, err, len(out))
		}
	}
	time.Sleep(2500 * time.Millisecond) // let a status line and the status file appear
	status, err := exec.CommandContext(ctx, bin, "client", "status", "--state", state).CombinedOutput()
	if err != nil || !strings.Contains(string(status), "primary guard") || !strings.Contains(string(status), "circuit relay") {
		t.Fatalf("veil client status: %v\n%s", err, status)
	}
	t.Logf("veil client status:\n%s", status)
	cancel()
	cmd.Wait()
	logs := stderr.String()
	if strings.Contains(logs, "hostLookupOrder(") {
		t.Fatalf("the client process looked a name up:\n%s", logs)
	}
	for _, want := range []string{"bootstrapped 5%", "bootstrapped 100%", "msg=ready", "msg=status"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("client log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, site.port()) {
		t.Fatalf("the client's Info log names a destination:\n%s", logs)
	}
	for path, mode := range map[string]os.FileMode{state: 0o700, filepath.Join(state, client.StateFileName): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, mode)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// killBound is how long the next request may take after a relay of its
// circuit was killed: failing over means at most a couple of circuit
// builds, each bounded by the learned timeout (MinBuildTimeout on loopback
// after the first builds) plus a stream attempt.
const killBound = 45 * time.Second

func testRelayKilled(t *testing.T, ctx context.Context, n *e2eNet, site *webSite) {
	dir := filepath.Join(t.TempDir(), "state")
	pinGuards(t, n, dir, "relay3", "relay9") // guards that are never killed here
	e := startClient(t, ctx, n, dir)
	for try := 0; try < 12; try++ {
		user := fmt.Sprintf("k%d", try)
		resp, err := socksGet(ctx, e, user, site.url("/slow"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 32<<10)); err != nil {
			t.Fatal(err)
		}
		var path []string
		for _, cs := range e.c.Status().Circuits {
			if cs.Streams > 0 {
				path = cs.Path
			}
		}
		// Kill the exit, else the middle, if it is relay4 or relay5 (the
		// extra exits; relays 6..8 are left for the guard test).
		victim := ""
		for _, i := range []int{len(path) - 1, 1} {
			if i > 0 && i < len(path) && (path[i] == "relay4" || path[i] == "relay5") && n.stoppable(path[i]) {
				victim = path[i]
				break
			}
		}
		if victim == "" {
			resp.Body.Close()
			continue
		}
		t.Logf("download on %s; killing %s", strings.Join(path, " > "), victim)
		n.stop(victim)
		killed := time.Now()
		// The download in progress fails (it does not hang).
		errc := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, resp.Body)
			errc <- err
		}()
		select {
		case err := <-errc:
			if err == nil {
				t.Fatal("the download completed although its relay was killed")
			}
			t.Logf("download failed after %v: %v", time.Since(killed).Round(time.Millisecond), err)
		case <-time.After(killBound):
			t.Fatalf("the download hung for %v after its relay was killed", killBound)
		}
		resp.Body.Close()
		// The next request moves to a circuit without the dead relay.
		next, err := socksGet(ctx, e, user, site.url("/file/1048576"))
		if err != nil {
			t.Fatalf("next request after the kill: %v", err)
		}
		b, err := io.ReadAll(next.Body)
		next.Body.Close()
		took := time.Since(killed)
		if err != nil || sha256.Sum256(b) != site.fileHash(1<<20) {
			t.Fatalf("next download: %d bytes, %v", len(b), err)
		}
		if took > killBound {
			t.Fatalf("the next request took %v after the kill, bound %v", took, killBound)
		}
		for _, cs := range e.c.Status().Circuits {
			if slices.Contains(cs.Path, victim) && cs.Streams > 0 {
				t.Fatalf("a live stream still uses killed %s", victim)
			}
		}
		t.Logf("next 1 MiB request done %v after the kill", took.Round(time.Millisecond))
		return
	}
	t.Fatal("no download ran over a killable exit or middle in 12 tries")
}

// guardInUse is the guard new circuits should use: the first sampled guard
// whose state is "up".
func guardInUse(t *testing.T, c *client.Client) string {
	t.Helper()
	for _, g := range c.Status().Guards {
		if g.State == "up" {
			return g.Nickname
		}
	}
	t.Fatalf("no guard is up: %+v", c.Status().Guards)
	return ""
}

func testGuardDown(t *testing.T, ctx context.Context, n *e2eNet, site *webSite) {
	dir := filepath.Join(t.TempDir(), "state")
	pinGuards(t, n, dir, "relay6", "relay7", "relay8")
	e := startClient(t, ctx, n, dir)
	// The guard in use is the first listed one; normally relay6, but the
	// young testnet's authorities may withhold the Guard flag for a round.
	first := guardInUse(t, e.c)
	if !n.stoppable(first) {
		t.Fatalf("guard in use %s is not one of the pinned relays; status:\n%s", first, e.c.Status())
	}
	for _, p := range e.c.CircuitPaths() {
		if p[0].Nickname != first {
			t.Fatalf("circuit through guard %s, want %s; status:\n%s", p[0].Nickname, first, e.c.Status())
		}
	}
	get := func() time.Duration {
		start := time.Now()
		hc := e.c.HTTPClient(client.HTTPOptions{Timeout: killBound})
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(site.url("/file/50000"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || sha256.Sum256(b) != site.fileHash(50000) {
			t.Fatalf("fetch: %d bytes, %v", len(b), err)
		}
		return time.Since(start)
	}
	get()
	n.stop(first)
	took := get()
	next := guardInUse(t, e.c)
	t.Logf("guard %s stopped; first fetch took %v, now on %s", first, took.Round(time.Millisecond), next)
	if next == first {
		t.Fatalf("stopped guard %s still counts as up", first)
	}
	for _, p := range e.c.CircuitPaths() {
		if p[0].Nickname != next {
			t.Fatalf("after %s went down, a circuit uses guard %s, want %s", first, p[0].Nickname, next)
		}
	}
	// The failure is on disk; a restarted client keeps the order and goes
	// straight to the next guard.
	e.c.Close()
	b, err := os.ReadFile(filepath.Join(dir, client.StateFileName))
	if err != nil {
		t.Fatal(err)
	}
	st, err := client.ParseState(b)
	if err != nil {
		t.Fatal(err)
	}
	failed := false
	for _, g := range st.Entries {
		failed = failed || (g.Nickname == first && !g.FailedSince.IsZero())
	}
	if !failed {
		t.Fatalf("state file does not record %s failing:\n%s", first, b)
	}
	e2 := startClient(t, ctx, n, dir)
	for _, p := range e2.c.CircuitPaths() {
		if p[0].Nickname == first {
			t.Fatalf("restarted client went back to failing guard %s", first)
		}
	}
}
