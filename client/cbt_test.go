package client

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBuildTimeoutLearns(t *testing.T) {
	b := NewBuildTimeout()
	if b.Timeout() != InitialBuildTimeout {
		t.Fatal("initial timeout")
	}
	r := rand.New(rand.NewPCG(1, 2))
	// Pareto-ish build times around 2 s (a slow network).
	for range MinBuildObservations - 1 {
		b.Observe(2*time.Second + time.Duration(r.ExpFloat64()*float64(500*time.Millisecond)))
	}
	if b.Timeout() != InitialBuildTimeout {
		t.Fatal("adapted before MinBuildObservations")
	}
	for range 100 {
		b.Observe(2*time.Second + time.Duration(r.ExpFloat64()*float64(500*time.Millisecond)))
	}
	got := b.Timeout()
	if got < 2*time.Second || got > 5*time.Second {
		t.Fatalf("learned %v for builds of about 2-3 s", got)
	}
	// Fast builds (loopback): clamped to the minimum.
	f := NewBuildTimeout()
	for range 50 {
		f.Observe(time.Duration(5+r.IntN(20)) * time.Millisecond)
	}
	if f.Timeout() != MinBuildTimeout {
		t.Fatalf("fast network: %v, want the minimum %v", f.Timeout(), MinBuildTimeout)
	}
	if n := len(f.Completed()); n != 50 {
		t.Fatalf("Completed returned %d", n)
	}
	// Timeouts are right-censored: they raise the estimate.
	before := b.Timeout()
	for range 10 {
		b.ObserveTimeout()
	}
	if b.Timeout() <= before {
		t.Fatalf("timeouts did not raise the estimate: %v -> %v", before, b.Timeout())
	}
	// Most recent builds timing out: start over.
	for range cbtResetTimeouts {
		b.ObserveTimeout()
	}
	if b.Timeout() != InitialBuildTimeout || len(b.Completed()) != 0 {
		t.Fatalf("network change not detected: %v", b.Timeout())
	}
}

func TestBuildTimeoutBounded(t *testing.T) {
	b := NewBuildTimeout()
	for i := range 3 * MaxBuildObservations {
		b.Observe(time.Duration(i%500) * time.Millisecond * 100)
	}
	if len(b.samples) != MaxBuildObservations {
		t.Fatalf("%d samples kept", len(b.samples))
	}
	if to := b.Timeout(); to < MinBuildTimeout || to > MaxBuildTimeout {
		t.Fatalf("timeout %v out of bounds", to)
	}
}
