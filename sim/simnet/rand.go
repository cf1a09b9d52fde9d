package simnet

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"time"
)

// Rand is a deterministic random stream: ChaCha8 keyed from the
// simulation's seed and a label. It is an io.Reader (for key generation and
// handshakes, which take one) and has the usual draws. Streams with
// different labels are independent, so adding randomness to one component
// does not shift what another draws.
type Rand struct {
	c *rand.ChaCha8
	r *rand.Rand
}

// Stream returns the random stream named label for this simulation's seed:
// ChaCha8 keyed with SHA-256("veil simnet" || seed || label).
func (s *Sim) Stream(label string) *Rand { return NewRand(s.seed, label) }

// NewRand returns the stream named label for seed (see Sim.Stream).
func NewRand(seed uint64, label string) *Rand {
	h := sha256.New()
	h.Write([]byte("veil simnet"))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(label))
	var key [32]byte
	copy(key[:], h.Sum(nil))
	c := rand.NewChaCha8(key)
	return &Rand{c: c, r: rand.New(c)}
}

// Read fills p; it never fails.
func (r *Rand) Read(p []byte) (int, error) { return r.c.Read(p) }

// Float64 is uniform in [0, 1).
func (r *Rand) Float64() float64 { return r.r.Float64() }

// IntN is uniform in [0, n); n must be positive.
func (r *Rand) IntN(n int) int { return r.r.IntN(n) }

// Uint64 is a uniform 64-bit value.
func (r *Rand) Uint64() uint64 { return r.r.Uint64() }

// Exp is exponential with the given mean.
func (r *Rand) Exp(mean time.Duration) time.Duration {
	return time.Duration(r.r.ExpFloat64() * float64(mean))
}

// LogNormal is log-normal with the given median and sigma (of the
// underlying normal).
func (r *Rand) LogNormal(median, sigma float64) float64 {
	return median * math.Exp(sigma*r.r.NormFloat64())
}

// Pareto is Pareto-distributed with scale xm (the minimum) and shape alpha.
func (r *Rand) Pareto(xm, alpha float64) float64 {
	u := 1 - r.r.Float64() // (0, 1]
	return xm / math.Pow(u, 1/alpha)
}

// Shuffle permutes n elements with swap.
func (r *Rand) Shuffle(n int, swap func(i, j int)) { r.r.Shuffle(n, swap) }
