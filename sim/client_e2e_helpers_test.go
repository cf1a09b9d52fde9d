package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
	"github.com/veilnet/veil/socks"
)

// e2eNet is a testnet (3 authorities, relays 1..3, no client) plus extra
// relays, 4 and up, that a test can stop one by one (the testnet itself
// has no way to stop a single relay yet).
type e2eNet struct {
	tn    *Testnet
	mu    sync.Mutex
	extra map[string]*stoppableRelay // by nickname
}

type stoppableRelay struct {
	id     directory.RelayID
	cancel context.CancelFunc
	done   chan struct{}
}

// startE2ENet starts the network with extra relays (the first extraExits
// of them exits) and waits until the consensus lists every relay.
func startE2ENet(t *testing.T, ctx context.Context, extra, extraExits int) *e2eNet {
	t.Helper()
	tn, err := StartTestnet(ctx, TestnetConfig{Relays: 3, VotingInterval: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n := &e2eNet{tn: tn, extra: map[string]*stoppableRelay{}}
	t.Cleanup(func() {
		n.mu.Lock()
		for _, r := range n.extra {
			r.cancel()
			<-r.done
		}
		n.mu.Unlock()
		if err := tn.Close(); err != nil {
			t.Errorf("closing testnet: %v", err)
		}
	})
	for i := 3; i < 3+extra; i++ {
		r, err := newTestnetRelay(tn.Dir, i, i-3 < extraExits, tn.Network, slogDiscard)
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(context.Background())
		sr := &stoppableRelay{id: r.relay.ID(), cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(sr.done)
			r.relay.Run(rctx)
		}()
		n.extra[fmt.Sprintf("relay%d", i+1)] = sr
	}
	want := 3 + extra
	for {
		cons, _, err := dirclient.FetchVerifiedConsensus(ctx, tn.Network, time.Now)
		if err == nil && len(cons.Relays) == want {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consensus never listed %d relays (last: %v)", want, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	return n
}

// stop stops extra relay nick (its listener and every link close) and
// reports whether it was running.
func (n *e2eNet) stop(nick string) bool {
	n.mu.Lock()
	r := n.extra[nick]
	delete(n.extra, nick)
	n.mu.Unlock()
	if r == nil {
		return false
	}
	r.cancel()
	<-r.done
	return true
}

// stoppable reports whether nick is an extra relay still running.
func (n *e2eNet) stoppable(nick string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.extra[nick] != nil
}

// e2eClient is a client with a SOCKS port whose Dialer records every
// destination it is handed.
type e2eClient struct {
	c     *client.Client
	socks *socks.Server
	state string

	mu    sync.Mutex
	hosts []string // "host:port" as the SOCKS layer handed them over
}

type recordingDialer struct {
	e    *e2eClient
	next socks.Dialer
}

// DialStream records the destination and refuses (with ErrNotAllowed,
// SOCKS reply 0x02) anything but loopback names and addresses, so that
// nothing a browser tries on its own (update checks and the like) can
// make an in-process exit resolve or connect beyond this machine.
func (d recordingDialer) DialStream(ctx context.Context, iso, host string, port uint16) (net.Conn, error) {
	d.e.mu.Lock()
	d.e.hosts = append(d.e.hosts, net.JoinHostPort(host, strconv.Itoa(int(port))))
	d.e.mu.Unlock()
	if !loopbackTarget(host) {
		return nil, socks.ErrNotAllowed
	}
	return d.next.DialStream(ctx, iso, host, port)
}

func loopbackTarget(host string) bool {
	switch strings.TrimSuffix(strings.ToLower(host), ".") {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

func (e *e2eClient) dialed() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.hosts...)
}

// startClient bootstraps a client with state directory dir ("" for a
// temporary one) and serves SOCKS on a free loopback port.
func startClient(t *testing.T, ctx context.Context, n *e2eNet, dir string) *e2eClient {
	t.Helper()
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "state")
	}
	c, err := client.New(client.Config{Network: n.tn.Network, StateDir: dir, StatusInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	e := &e2eClient{c: c, state: dir}
	if err := c.Bootstrap(ctx); err != nil {
		c.Close()
		t.Fatal(err)
	}
	srv, err := socks.Listen(socks.Config{Addr: "127.0.0.1:0", Dialer: recordingDialer{e, socks.ClientDialer(c)}})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	e.socks = srv
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(sctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		c.Close()
	})
	return e
}

// pinGuards writes a state file whose guards are the relays named, in
// order, so a test knows which guard a client uses.
func pinGuards(t *testing.T, n *e2eNet, dir string, nicks ...string) {
	t.Helper()
	cons, _, err := dirclient.FetchVerifiedConsensus(context.Background(), n.tn.Network, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var st client.State
	for _, nick := range nicks {
		r := relayByNick(cons, nick)
		if r == nil {
			t.Fatalf("%s not in the consensus", nick)
		}
		st.Entries = append(st.Entries, client.GuardEntry{ID: r.ID, Nickname: nick, Added: now, Expires: now.Add(client.GuardLifetime)})
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, client.StateFileName), st.Encode(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func relayByNick(cons *directory.Consensus, nick string) *directory.RouterStatus {
	for i := range cons.Relays {
		if cons.Relays[i].Nickname == nick {
			return &cons.Relays[i]
		}
	}
	return nil
}

// webSite serves, on 127.0.0.1:
//
//	/            a page with three images and a script that reports them loaded
//	/img/N.png   a 64x48 PNG
//	/file/SIZE   SIZE random bytes (the same bytes for one SIZE)
//	/slow        64 KiB at once, then the rest only when release is closed
type webSite struct {
	srv     *httptest.Server
	release chan struct{}

	mu    sync.Mutex
	files map[int][]byte
	hits  map[string]int
}

func startWebSite(t *testing.T) *webSite {
	w := &webSite{release: make(chan struct{}), files: map[int][]byte{}, hits: map[string]int{}}
	var pngBuf bytes.Buffer
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = byte(i)
	}
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	png.Encode(&pngBuf, img)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		w.hit("/")
		fmt.Fprint(rw, `<!doctype html><html><head><title>veil test</title></head><body>
<h1 id="h">Hello through veil</h1>
<img src="/img/1.png" onload="loaded()"><img src="/img/2.png" onload="loaded()"><img src="/img/3.png" onload="loaded()">
<p id="out">waiting</p>
<script>var n = 0; function loaded() { n++; document.getElementById("out").textContent = n + " images loaded, width " + document.images[0].naturalWidth; }</script>
</body></html>`)
	})
	mux.HandleFunc("/img/", func(rw http.ResponseWriter, r *http.Request) {
		w.hit(r.URL.Path)
		rw.Header().Set("Content-Type", "image/png")
		rw.Write(pngBuf.Bytes())
	})
	mux.HandleFunc("/file/", func(rw http.ResponseWriter, r *http.Request) {
		size, err := strconv.Atoi(r.URL.Path[len("/file/"):])
		if err != nil || size < 0 || size > 64<<20 {
			http.NotFound(rw, r)
			return
		}
		w.hit("/file")
		rw.Header().Set("Content-Length", strconv.Itoa(size))
		rw.Write(w.file(size))
	})
	mux.HandleFunc("/slow", func(rw http.ResponseWriter, r *http.Request) {
		w.hit("/slow")
		rw.Header().Set("Content-Length", strconv.Itoa(4<<20))
		data := w.file(4 << 20)
		rw.Write(data[:64<<10])
		rw.(http.Flusher).Flush()
		select {
		case <-w.release:
			rw.Write(data[64<<10:])
		case <-r.Context().Done():
		}
	})
	w.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		w.mu.Lock()
		select {
		case <-w.release:
		default:
			close(w.release)
		}
		w.mu.Unlock()
		w.srv.CloseClientConnections()
		w.srv.Close()
	})
	return w
}

func (w *webSite) hit(path string) {
	w.mu.Lock()
	w.hits[path]++
	w.mu.Unlock()
}

func (w *webSite) hitCount(path string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[path]
}

func (w *webSite) file(size int) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if b, ok := w.files[size]; ok {
		return b
	}
	b := make([]byte, size)
	rand.Read(b)
	w.files[size] = b
	return b
}

func (w *webSite) fileHash(size int) [32]byte { return sha256.Sum256(w.file(size)) }

// port is the site's port; pages are fetched as http://localhost:PORT/ so
// that the proxy receives a hostname.
func (w *webSite) port() string {
	_, p, _ := net.SplitHostPort(w.srv.Listener.Addr().String())
	return p
}

func (w *webSite) url(path string) string { return "http://localhost:" + w.port() + path }
