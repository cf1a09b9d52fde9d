package relay

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limit accounting as plain types: no goroutines, no clock of their own
// (time is an argument), so the simulator can drive the same rules.

// addrCounter counts concurrent things (links) per remote address and
// refuses the one that would exceed max. The zero value is not usable;
// use newAddrCounter. Safe for concurrent use.
type addrCounter struct {
	mu  sync.Mutex
	max int
	n   map[netip.Addr]int
}

func newAddrCounter(max int) *addrCounter {
	return &addrCounter{max: max, n: make(map[netip.Addr]int)}
}

// Acquire takes a slot for a; false means a already holds max.
func (c *addrCounter) Acquire(a netip.Addr) bool {
	a = a.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[a] >= c.max {
		return false
	}
	c.n[a]++
	return true
}

// Release gives back a slot taken by Acquire.
func (c *addrCounter) Release(a netip.Addr) {
	a = a.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[a] <= 1 {
		delete(c.n, a)
	} else {
		c.n[a]--
	}
}

// Count is how many slots a holds.
func (c *addrCounter) Count(a netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[a.Unmap()]
}

// MaxCreateBuckets bounds the per-address token buckets a relay keeps.
const MaxCreateBuckets = 1 << 16

// createLimiter is a token bucket of CREATEs per client address: each
// address may start rate circuits per second on average with bursts of
// burst. Buckets idle long enough to have refilled are forgotten, and at
// most MaxCreateBuckets are kept: when that many addresses are all
// active, new addresses are refused (fail closed) until some go idle.
// Safe for concurrent use.
type createLimiter struct {
	mu      sync.Mutex
	rate    rate.Limit
	burst   int
	max     int
	buckets map[netip.Addr]*createBucket
	sweep   time.Time // next time to forget idle buckets
}

type createBucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newCreateLimiter(perSecond float64, burst int) *createLimiter {
	return &createLimiter{rate: rate.Limit(perSecond), burst: burst, max: MaxCreateBuckets, buckets: make(map[netip.Addr]*createBucket)}
}

// refill is how long an idle bucket takes to fill up again; after that
// forgetting it changes nothing.
func (l *createLimiter) refill() time.Duration {
	return time.Duration(float64(l.burst)/float64(l.rate)*float64(time.Second)) + time.Second
}

// Allow takes one token from a's bucket at now.
func (l *createLimiter) Allow(a netip.Addr, now time.Time) bool {
	a = a.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[a]
	if b == nil {
		if len(l.buckets) >= l.max || now.After(l.sweep) {
			l.forgetIdle(now)
		}
		if len(l.buckets) >= l.max {
			return false
		}
		b = &createBucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[a] = b
	}
	b.last = now
	return b.lim.AllowN(now, 1)
}

func (l *createLimiter) forgetIdle(now time.Time) {
	idle := l.refill()
	for a, b := range l.buckets {
		if now.Sub(b.last) > idle {
			delete(l.buckets, a)
		}
	}
	l.sweep = now.Add(idle)
}

// Len is the number of buckets kept.
func (l *createLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
