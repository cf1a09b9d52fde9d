package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"golang.org/x/net/proxy"
)

// webServer serves random files from memory on 127.0.0.1, as the Tor
// harness's python http.server does from disk.
type webServer struct {
	addr  string
	files map[string][]byte
	srv   *http.Server
}

// startWeb serves a file of each size under /NAME. Idle connections may
// wait long for a request: the open-stream phase holds streams without
// sending one.
func startWeb(sizes map[string]int) (*webServer, error) {
	w := &webServer{files: make(map[string][]byte)}
	for name, size := range sizes {
		b := make([]byte, size)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		w.files[name] = b
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{name}", func(rw http.ResponseWriter, r *http.Request) {
		b, ok := w.files[r.PathValue("name")]
		if !ok {
			http.NotFound(rw, r)
			return
		}
		rw.Header().Set("Content-Type", "application/octet-stream")
		rw.Header().Set("Content-Length", fmt.Sprint(len(b)))
		rw.Write(b)
	})
	w.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Minute}
	go w.srv.Serve(ln)
	return w, nil
}

func (w *webServer) close() { w.srv.Close() }

// fetchResult is one download.
type fetchResult struct {
	TTFB, Total time.Duration
	Bytes       int64
}

var errMismatch = errors.New("bench: downloaded bytes differ from the file served")

// fetch downloads /name through the SOCKS5 proxy at socksAddr on a new
// SOCKS connection (a new stream), as user (no authentication if ""),
// and checks every byte against want. TTFB runs from the start of the
// SOCKS connection to the first body byte, as curl's time_starttransfer.
func fetch(ctx context.Context, socksAddr, user, webAddr, name string, want []byte) (fetchResult, error) {
	var r fetchResult
	var auth *proxy.Auth
	if user != "" {
		auth = &proxy.Auth{User: user, Password: "x"}
	}
	d, err := proxy.SOCKS5("tcp", socksAddr, auth, proxy.Direct)
	if err != nil {
		return r, err
	}
	tr := &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext, DisableKeepAlives: true, DisableCompression: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+webAddr+"/"+name, nil)
	if err != nil {
		return r, err
	}
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("bench: HTTP %d", resp.StatusCode)
	}
	buf := make([]byte, 64<<10)
	for {
		m, err := resp.Body.Read(buf)
		if m > 0 {
			if r.Bytes == 0 {
				r.TTFB = time.Since(start)
			}
			if r.Bytes+int64(m) > int64(len(want)) || !bytes.Equal(buf[:m], want[r.Bytes:r.Bytes+int64(m)]) {
				return r, errMismatch
			}
			r.Bytes += int64(m)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return r, err
		}
	}
	r.Total = time.Since(start)
	if r.Bytes != int64(len(want)) {
		return r, fmt.Errorf("%w: got %d of %d bytes", errMismatch, r.Bytes, len(want))
	}
	return r, nil
}

// Stat is a median and 90th percentile.
type Stat struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// stat summarises xs with linear interpolation between ranks (the Tor
// harness's pct()).
func stat(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Stat{N: len(s), Median: quantile(s, 0.5), P90: quantile(s, 0.9), Min: s[0], Max: s[len(s)-1]}
}

func quantile(sorted []float64, q float64) float64 {
	k := float64(len(sorted)-1) * q
	lo := int(k)
	hi := min(lo+1, len(sorted)-1)
	return sorted[lo] + (sorted[hi]-sorted[lo])*(k-float64(lo))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
