package dirclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/veilnet/veil/directory"
)

// server starts an HTTP server on 127.0.0.1 and returns its host:port.
func server(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestUploadAndFetch(t *testing.T) {
	var got []byte
	addr := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "POST" && r.URL.Path == PathDescriptor:
			got, _ = io.ReadAll(r.Body)
			io.WriteString(w, "ok\n")
		case r.Method == "GET" && r.URL.Path == PathConsensus:
			io.WriteString(w, "consensus bytes")
		default:
			http.NotFound(w, r)
		}
	})
	c := New(nil)
	defer c.CloseIdleConnections()
	if err := c.UploadDescriptor(ctx(t), addr, []byte("desc")); err != nil || string(got) != "desc" {
		t.Fatalf("upload: %v, server got %q", err, got)
	}
	b, err := c.FetchConsensus(ctx(t), addr)
	if err != nil || string(b) != "consensus bytes" {
		t.Fatalf("fetch: %q, %v", b, err)
	}
	if _, err := c.FetchVote(ctx(t), addr, time.Unix(10, 0), make(ed25519.PublicKey, 32)); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing vote: %v, want ErrNotFound", err)
	}
}

func TestRejectedUploadQuotesReason(t *testing.T) {
	addr := server(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "directory: bad signature\x00\x1b[31m"+strings.Repeat("x", 1000), http.StatusBadRequest)
	})
	err := New(nil).UploadDescriptor(ctx(t), addr, []byte("desc"))
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("got %v", err)
	}
	if strings.ContainsAny(err.Error(), "\x00\x1b") || len(err.Error()) > 400 {
		t.Errorf("error not sanitized or not bounded: %q", err.Error())
	}
}

func TestSizeLimit(t *testing.T) {
	big := bytes.Repeat([]byte("a"), directory.MaxSignatureSize+1)
	for _, chunked := range []bool{false, true} {
		addr := server(t, func(w http.ResponseWriter, r *http.Request) {
			if chunked {
				w.(http.Flusher).Flush() // no Content-Length
			}
			w.Write(big)
		})
		_, err := New(nil).FetchSignature(ctx(t), addr, time.Unix(10, 0), make(ed25519.PublicKey, 32))
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("chunked=%v: got %v, want ErrTooLarge", chunked, err)
		}
	}
}

func TestNoRedirects(t *testing.T) {
	var followed atomic.Bool
	addr := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Store(true)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	if _, err := New(nil).FetchConsensus(ctx(t), addr); !errors.Is(err, ErrRejected) || followed.Load() {
		t.Errorf("redirect: err %v, followed %v", err, followed.Load())
	}
}

func TestBadAddress(t *testing.T) {
	for _, a := range []string{"", "host", "http://127.0.0.1:1", "127.0.0.1:1/x", "user@127.0.0.1:1", ":80"} {
		if err := New(nil).UploadDescriptor(ctx(t), a, nil); !errors.Is(err, ErrBadAddress) {
			t.Errorf("%q: got %v, want ErrBadAddress", a, err)
		}
	}
}

func TestContextBoundsSlowServer(t *testing.T) {
	release := make(chan struct{})
	addr := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := New(nil).FetchConsensus(c, addr); !errors.Is(err, ErrRequest) {
		t.Errorf("slow server: got %v, want ErrRequest", err)
	}
}

func TestRoundPath(t *testing.T) {
	id := make(ed25519.PublicKey, 32)
	id[0] = 0xab
	got := RoundPath(PathVote, time.Unix(1700000000, 0), id)
	want := PathVote + "/1700000000/AB" + strings.Repeat("00", 31)
	if got != want {
		t.Errorf("RoundPath = %q, want %q", got, want)
	}
}
