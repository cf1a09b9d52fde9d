package exitdns

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

func TestCacheTTL(t *testing.T) {
	c := NewCache(10)
	a := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	c.Put("Example.ORG.", a, 5*time.Minute, t0)
	if got, ok, err := c.Get("example.org", t0.Add(4*time.Minute)); !ok || err != nil || got[0] != a[0] {
		t.Fatalf("hit within TTL: %v %v %v", got, ok, err)
	}
	if _, ok, _ := c.Get("example.org", t0.Add(5*time.Minute)); ok {
		t.Fatal("hit at expiry")
	}
	// Clamping: a 1 s TTL lives MinTTL, a day lives MaxTTL, 0 DefaultTTL.
	for _, tc := range []struct {
		ttl, life time.Duration
	}{{time.Second, MinTTL}, {24 * time.Hour, MaxTTL}, {0, DefaultTTL}} {
		c.Put("x.test", a, tc.ttl, t0)
		if _, ok, _ := c.Get("x.test", t0.Add(tc.life-time.Nanosecond)); !ok {
			t.Errorf("ttl %v: gone before %v", tc.ttl, tc.life)
		}
		if _, ok, _ := c.Get("x.test", t0.Add(tc.life)); ok {
			t.Errorf("ttl %v: still there at %v", tc.ttl, tc.life)
		}
	}
}

func TestCacheNegative(t *testing.T) {
	c := NewCache(10)
	c.Put("nx.test", nil, time.Hour, t0)
	if _, ok, err := c.Get("nx.test", t0.Add(NegativeTTL-time.Second)); !ok || !errors.Is(err, ErrNotFound) {
		t.Fatalf("negative entry: %v %v", ok, err)
	}
	if _, ok, _ := c.Get("nx.test", t0.Add(NegativeTTL)); ok {
		t.Fatal("negative entry outlived NegativeTTL")
	}
}

func TestCacheBoundedLRU(t *testing.T) {
	c := NewCache(3)
	a := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	for i := range 3 {
		c.Put(fmt.Sprintf("h%d.test", i), a, time.Hour, t0)
	}
	c.Get("h0.test", t0) // h1 is now the least recently used
	c.Put("h3.test", a, time.Hour, t0)
	if c.Len() != 3 {
		t.Fatalf("len %d, want 3", c.Len())
	}
	if _, ok, _ := c.Get("h1.test", t0); ok {
		t.Fatal("LRU entry not evicted")
	}
	for _, h := range []string{"h0.test", "h2.test", "h3.test"} {
		if _, ok, _ := c.Get(h, t0); !ok {
			t.Fatalf("%s evicted", h)
		}
	}
	many := make([]netip.Addr, 100)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
	}
	c.Put("many.test", many, time.Hour, t0)
	if got, _, _ := c.Get("many.test", t0); len(got) != MaxAddrs {
		t.Fatalf("kept %d addresses, want %d", len(got), MaxAddrs)
	}
	var nilCache *Cache
	nilCache.Put("a.test", a, time.Hour, t0)
	if _, ok, _ := nilCache.Get("a.test", t0); ok {
		t.Fatal("nil cache hit")
	}
}

func TestValidName(t *testing.T) {
	for _, s := range []string{"example.org", "a", "xn--bcher-kva.example.", "_srv.a-b.test"} {
		if !ValidName(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", ".", "a..b", "a b", "a/b", "exa\x00mple", string(make([]byte, 254)), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b"} {
		if ValidName(s) {
			t.Errorf("%q accepted", s)
		}
	}
}
