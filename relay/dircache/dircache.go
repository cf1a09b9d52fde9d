// Package dircache is the directory cache a relay can run
// (docs/spec/directory.md, "Directory caches"): it fetches the consensus
// from the authorities soon after each is published, verifies it exactly
// as clients do, and serves it over HTTP, gzip-compressed to clients that
// accept it. Clients find caches in the consensus (relays whose
// descriptor has a dir-address) and prefer them to the authorities, so
// the authorities are not a bottleneck.
//
// Wiring, for the relay:
//
//	c, err := dircache.New(dircache.Config{Network: net, Logger: log})
//	go c.Run(ctx)                       // fetch and refresh
//	srv := &http.Server{Handler: c.Handler(), ...dircache timeouts}
//	// and publish the listener's address as Descriptor.DirAddress
package dircache

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
)

// Server limits a relay should use for the cache's http.Server.
const (
	ReadHeaderTimeout = 5 * time.Second
	WriteTimeout      = 60 * time.Second
	IdleTimeout       = 60 * time.Second
	MaxHeaderBytes    = 8 << 10
	// MaxConcurrentRequests bounds requests served at once; more get 503.
	MaxConcurrentRequests = 64
)

// Config configures a cache. Only Network is required.
type Config struct {
	Network *directory.Network
	Client  *dirclient.Client // nil: dirclient.New(nil)
	Logger  *slog.Logger      // nil discards
	Now     func() time.Time  // nil: time.Now
	Rand    *rand.Rand        // nil: seeded from crypto/rand
}

// Cache fetches, verifies and serves the consensus. It is safe for
// concurrent use.
type Cache struct {
	m   *dirclient.Manager
	now func() time.Time
	log *slog.Logger
	sem chan struct{}

	mu  sync.Mutex
	doc *Document
}

// New returns a cache holding no consensus yet.
func New(cfg Config) (*Cache, error) {
	c := &Cache{log: cfg.Logger, now: cfg.Now, sem: make(chan struct{}, MaxConcurrentRequests)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	m, err := dirclient.NewManager(dirclient.ManagerConfig{
		Network: cfg.Network, Client: cfg.Client, Logger: c.log, Now: c.now, Rand: cfg.Rand, Cache: true,
		OnUpdate: func(cons *directory.Consensus, raw []byte) {
			d := NewDocument(raw, cons.ValidUntil)
			c.mu.Lock()
			c.doc = d
			c.mu.Unlock()
		},
	})
	if err != nil {
		return nil, err
	}
	c.m = m
	return c, nil
}

// Manager returns the cache's directory manager (its consensus can serve
// the relay itself).
func (c *Cache) Manager() *dirclient.Manager { return c.m }

// Run bootstraps and keeps the consensus fresh until ctx ends; it returns
// ctx's error, or a *dirclient.ClockSkewError if the local clock is wrong.
func (c *Cache) Run(ctx context.Context) error {
	if err := c.m.Bootstrap(ctx); err != nil {
		return err
	}
	return c.m.Run(ctx)
}

// Handler serves GET dirclient.PathConsensus: 200 with the consensus
// held while it is valid (gzip if the request accepts it), 404 if none.
func (c *Cache) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+dirclient.PathConsensus, func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		d := c.doc
		c.mu.Unlock()
		if d == nil || c.now().After(d.ValidUntil) {
			http.Error(w, "no valid consensus", http.StatusNotFound)
			return
		}
		d.ServeHTTP(w, r)
	})
	return Limit(mux, c.sem, c.log)
}

// Document is a signed directory document ready to serve, raw and
// gzip-compressed.
type Document struct {
	Raw        []byte
	Gzip       []byte
	ValidUntil time.Time
}

// NewDocument compresses raw once for serving.
func NewDocument(raw []byte, validUntil time.Time) *Document {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	return &Document{Raw: raw, Gzip: b.Bytes(), ValidUntil: validUntil}
}

// ServeHTTP writes the document, gzip-encoded if the request accepts
// gzip.
func (d *Document) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := d.Raw
	w.Header().Set("Content-Type", "text/plain; charset=us-ascii")
	w.Header().Set("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		body = d.Gzip
		w.Header().Set("Content-Encoding", "gzip")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// acceptsGzip reports whether Accept-Encoding lists gzip (without q=0).
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
				return true
			}
		}
	}
	return false
}

// Limit bounds concurrency with sem (503 beyond it) and turns a handler
// panic into a 500 and a log line.
func Limit(next http.Handler, sem chan struct{}, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		default:
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		defer func() {
			if p := recover(); p != nil {
				if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(p)
				}
				log.Error("panic in directory handler", "path", r.URL.Path, "panic", p)
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}
