package client

import (
	"math"
	"sort"
	"time"
)

// Adaptive circuit build timeout, in the spirit of Tor's path-spec section
// 2.4 ("learning when to give up on circuit construction").
//
// Build times are modelled as a Pareto distribution. The scale Xm is the
// count-weighted mean of the cbtModes most frequent 10 ms bins; the shape
// is the maximum-likelihood estimate with builds that timed out counted as
// right-censored at the timeout they hit:
//
//	alpha = completed / (sum over completed ln(max(x,Xm)/Xm) + sum over timeouts ln(T/Xm))
//
// and the timeout is the cbtQuantile point of that distribution,
// Xm / (1-q)^(1/alpha), clamped to [MinBuildTimeout, MaxBuildTimeout].
// Until MinBuildObservations builds completed, InitialBuildTimeout is used.
// If at least cbtResetTimeouts of the last cbtRecent builds timed out, the
// network has probably changed: the observations are dropped and the
// timeout goes back to InitialBuildTimeout.

// Build timeout parameters.
const (
	InitialBuildTimeout  = 30 * time.Second
	MinBuildTimeout      = 1500 * time.Millisecond
	MaxBuildTimeout      = 60 * time.Second
	MinBuildObservations = 20
	MaxBuildObservations = 200
	cbtQuantile          = 0.8
	cbtBin               = 10 * time.Millisecond
	cbtModes             = 3
	cbtRecent            = 20
	cbtResetTimeouts     = 16
)

type buildSample struct {
	d        time.Duration
	timedOut bool
}

// BuildTimeout learns the circuit build timeout from observed build times.
// It is a pure type: observations are injected, nothing reads a clock. It
// is not safe for concurrent use. The zero value is not usable; use
// NewBuildTimeout.
type BuildTimeout struct {
	samples []buildSample // ring, at most MaxBuildObservations
	next    int
	timeout time.Duration
}

// NewBuildTimeout returns an estimator that starts at InitialBuildTimeout.
func NewBuildTimeout() *BuildTimeout {
	return &BuildTimeout{timeout: InitialBuildTimeout}
}

// Timeout is the current build timeout.
func (b *BuildTimeout) Timeout() time.Duration { return b.timeout }

// Observe records a build that completed in d.
func (b *BuildTimeout) Observe(d time.Duration) {
	b.add(buildSample{d: max(d, 0)})
}

// ObserveTimeout records a build abandoned when it reached the timeout.
func (b *BuildTimeout) ObserveTimeout() {
	b.add(buildSample{d: b.timeout, timedOut: true})
}

// Completed returns the recorded completed build times, oldest first (what
// the state file keeps).
func (b *BuildTimeout) Completed() []time.Duration {
	var out []time.Duration
	for i := range b.samples {
		s := b.samples[(b.next+i)%len(b.samples)]
		if !s.timedOut {
			out = append(out, s.d)
		}
	}
	return out
}

func (b *BuildTimeout) add(s buildSample) {
	if len(b.samples) < MaxBuildObservations {
		b.samples = append(b.samples, s)
		b.next = 0
	} else {
		b.samples[b.next] = s
		b.next = (b.next + 1) % MaxBuildObservations
	}
	if b.recentTimeouts() >= cbtResetTimeouts {
		b.samples, b.next, b.timeout = nil, 0, InitialBuildTimeout
		return
	}
	b.timeout = b.estimate()
}

// recentTimeouts counts timeouts among the last cbtRecent samples.
func (b *BuildTimeout) recentTimeouts() int {
	n, count := len(b.samples), 0
	for i := 1; i <= min(cbtRecent, n); i++ {
		idx := b.next - i
		if len(b.samples) < MaxBuildObservations {
			idx = n - i
		}
		if s := b.samples[(idx%n+n)%n]; s.timedOut {
			count++
		}
	}
	return count
}

func (b *BuildTimeout) estimate() time.Duration {
	completed := 0
	bins := map[int64]int{}
	for _, s := range b.samples {
		if !s.timedOut {
			completed++
			bins[int64(s.d/cbtBin)]++
		}
	}
	if completed < MinBuildObservations {
		return InitialBuildTimeout
	}
	xm := paretoScale(bins)
	var sum float64
	for _, s := range b.samples {
		x := max(float64(s.d), xm)
		sum += math.Log(x / xm)
	}
	if sum <= 0 { // every build took the same time
		return clampTimeout(time.Duration(2 * xm))
	}
	alpha := float64(completed) / sum
	t := xm / math.Pow(1-cbtQuantile, 1/alpha)
	if math.IsInf(t, 0) || math.IsNaN(t) {
		return MaxBuildTimeout
	}
	return clampTimeout(time.Duration(t))
}

// paretoScale is the count-weighted mean of the centres of the cbtModes
// fullest bins (ties broken towards faster bins).
func paretoScale(bins map[int64]int) float64 {
	keys := make([]int64, 0, len(bins))
	for k := range bins {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if bins[keys[i]] != bins[keys[j]] {
			return bins[keys[i]] > bins[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var num, den float64
	for _, k := range keys[:min(cbtModes, len(keys))] {
		centre := (float64(k) + 0.5) * float64(cbtBin)
		num += centre * float64(bins[k])
		den += float64(bins[k])
	}
	return num / den
}

func clampTimeout(d time.Duration) time.Duration {
	return min(max(d, MinBuildTimeout), MaxBuildTimeout)
}
