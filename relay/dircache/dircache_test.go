package dircache

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/veilnet/veil/directory/dirtest"
	"github.com/veilnet/veil/internal/dirclient"
)

func TestCacheFetchesVerifiesAndServesCompressed(t *testing.T) {
	n := dirtest.New(3, 6, dirtest.Options{})
	n.Upload()
	_, docs := n.Round()
	doc := docs[0]
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(doc) }))
	defer auth.Close()
	for i := range n.Network.Authorities {
		n.Network.Authorities[i].Address = fmt.Sprintf("127.0.0.1:%d", i+1)
	}
	n.Network.Authorities[0].Address = auth.Listener.Addr().String()
	now := n.Now
	c, err := New(Config{Network: n.Network, Now: func() time.Time { return now }, Rand: rand.New(rand.NewPCG(1, 1))})
	if err != nil {
		t.Fatal(err)
	}
	h := c.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", dirclient.PathConsensus, nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("before fetching: %d, want 404", rec.Code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Manager().Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	req := httptest.NewRequest("GET", dirclient.PathConsensus, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("got %d %q", rec.Code, rec.Header().Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(zr)
	if !bytes.Equal(got, doc) {
		t.Fatal("served a different document")
	}
	// The client side decompresses transparently.
	srv := httptest.NewServer(h)
	defer srv.Close()
	cl := dirclient.New(nil)
	defer cl.CloseIdleConnections()
	raw, err := cl.FetchConsensus(ctx, srv.Listener.Addr().String())
	if err != nil || !bytes.Equal(raw, doc) {
		t.Fatalf("FetchConsensus through the cache: %v", err)
	}
	// Once expired it is no longer served.
	now = now.Add(time.Hour)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", dirclient.PathConsensus, nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("after expiry: %d, want 404", rec.Code)
	}
}
