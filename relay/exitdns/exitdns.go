// Package exitdns is an exit relay's DNS: a Resolver interface with two
// implementations (Stub, which asks the nameservers of resolv.conf
// directly and reports TTLs, and System, the Go resolver, which does
// not), and a bounded, TTL-respecting cache.
//
// The Cache is a plain data structure: it never reads the clock (now is an
// argument) and starts no goroutines, so the simulator can drive it too.
// Answers are cached for their TTL, clamped to [MinTTL, MaxTTL]; a
// resolver that reports no TTL (the system resolver cannot) gets
// DefaultTTL. Names that do not exist are cached for NegativeTTL. At most
// max names are kept; the least recently used goes first.
//
// Nothing here checks where an address points: the exit applies its
// policy to the address it actually dials, after the cache, so a cached
// or rebinding answer of 127.0.0.1 is refused like the literal.
package exitdns

import (
	"container/list"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Cache limits.
const (
	DefaultCacheSize = 10000
	DefaultTTL       = time.Minute
	MinTTL           = 10 * time.Second
	MaxTTL           = 30 * time.Minute
	NegativeTTL      = 30 * time.Second
	// MaxAddrs bounds the addresses kept for one name.
	MaxAddrs = 16
	// MaxNameLen is the longest DNS name (RFC 1035).
	MaxNameLen = 253
)

var (
	// ErrNotFound is a name that does not exist (cached negatively).
	ErrNotFound = errors.New("exitdns: no such host")
	// ErrFailed is any other lookup failure: timeout, server failure.
	ErrFailed = errors.New("exitdns: lookup failed")
	// ErrBadName is a name the exit will not look up.
	ErrBadName = errors.New("exitdns: invalid host name")
)

// Resolver looks up a host name's addresses. ttl is how long the answer
// may be cached; 0 means unknown. Errors are ErrNotFound or ErrFailed
// (wrapped).
type Resolver interface {
	Resolve(ctx context.Context, host string) (addrs []netip.Addr, ttl time.Duration, err error)
}

// System adapts a *net.Resolver (which reports no TTLs).
func System(r *net.Resolver) Resolver { return systemResolver{r} }

type systemResolver struct{ r *net.Resolver }

var _ Resolver = systemResolver{}

func (s systemResolver) Resolve(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	addrs, err := s.r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, 0, ErrNotFound
		}
		// Wrap no detail: a net.DNSError names the host.
		return nil, 0, ErrFailed
	}
	return addrs, 0, nil
}

// ValidName reports whether host is worth asking DNS about: 1-253 bytes
// of letters, digits, '-', '_' and '.', without empty labels.
func ValidName(host string) bool {
	h := strings.TrimSuffix(host, ".")
	if len(h) == 0 || len(h) > MaxNameLen {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// Cache is a bounded DNS cache. Safe for concurrent use. A nil *Cache
// caches nothing.
type Cache struct {
	mu      sync.Mutex
	max     int
	entries map[string]*list.Element
	lru     list.List // front: most recently used; values *entry
}

type entry struct {
	name    string
	addrs   []netip.Addr // nil: negative entry
	expires time.Time
}

// NewCache returns a cache of at most max names (0 means DefaultCacheSize).
func NewCache(max int) *Cache {
	if max <= 0 {
		max = DefaultCacheSize
	}
	return &Cache{max: max, entries: make(map[string]*list.Element)}
}

func key(host string) string { return strings.ToLower(strings.TrimSuffix(host, ".")) }

// Get returns the cached answer for host at now: its addresses (a copy),
// or ErrNotFound for a cached negative answer (ok true). ok is false on
// a miss.
func (c *Cache) Get(host string, now time.Time) (addrs []netip.Addr, ok bool, err error) {
	if c == nil {
		return nil, false, nil
	}
	k := key(host)
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.entries[k]
	if el == nil {
		return nil, false, nil
	}
	e := el.Value.(*entry)
	if !now.Before(e.expires) {
		c.lru.Remove(el)
		delete(c.entries, k)
		return nil, false, nil
	}
	c.lru.MoveToFront(el)
	if e.addrs == nil {
		return nil, true, ErrNotFound
	}
	return append([]netip.Addr(nil), e.addrs...), true, nil
}

// Put caches addrs for host at now for ttl (clamped; 0 means DefaultTTL).
// An empty addrs caches a negative answer for NegativeTTL.
func (c *Cache) Put(host string, addrs []netip.Addr, ttl time.Duration, now time.Time) {
	if c == nil {
		return
	}
	var e entry
	e.name = key(host)
	if len(addrs) == 0 {
		e.expires = now.Add(NegativeTTL)
	} else {
		if ttl == 0 {
			ttl = DefaultTTL
		}
		ttl = min(max(ttl, MinTTL), MaxTTL)
		e.expires = now.Add(ttl)
		e.addrs = append([]netip.Addr(nil), addrs[:min(len(addrs), MaxAddrs)]...)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.entries[e.name]; el != nil {
		el.Value = &e
		c.lru.MoveToFront(el)
		return
	}
	for len(c.entries) >= c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*entry).name)
	}
	c.entries[e.name] = c.lru.PushFront(&e)
}

// Len is the number of names cached (expired ones included until used
// or evicted).
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
