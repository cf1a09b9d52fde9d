package relay

import (
	"crypto/rand"
	"testing"

	"github.com/veilnet/veil/circuit"
)

// extendTo adds hop to h's circuit.
func (h *oneHop) extendTo(hop circuit.HopSpec) {
	h.t.Helper()
	if err := h.cc.Extend(rand.Reader, hop, &h.acts); err != nil {
		h.t.Fatal(err)
	}
	h.flush()
	for !h.acts.Extended {
		h.recv()
	}
	h.acts.Reset()
}

// TestOneCanonicalLinkPerPair: A extends to B over a link it dials; then
// a circuit through B extending to A uses that same link (inbound at B)
// instead of dialing a second one.
func TestOneCanonicalLinkPerPair(t *testing.T) {
	a, specA, cancelA, doneA := startRelay(t, nil)
	defer func() { cancelA(); <-doneA }()
	b, specB, cancelB, doneB := startRelay(t, nil)
	defer func() { cancelB(); <-doneB }()
	echo := echoServer(t)

	h1 := dialOneHop(t, specA)
	h1.extendTo(specB)
	h2 := dialOneHop(t, specB)
	h2.extendTo(specA)
	echoRoundTrip(t, h2, echo.Port())
	echoRoundTrip(t, h1, echo.Port())

	out := func(r *Relay) float64 { return metricValue(r.metrics.Links.WithLabelValues("outbound")) }
	in := func(r *Relay) float64 { return metricValue(r.metrics.Links.WithLabelValues("inbound")) }
	if out(a) != 1 || out(b) != 0 || in(b) != 2 || in(a) != 1 {
		t.Fatalf("links: A out %v in %v, B out %v in %v; want one link between A and B", out(a), in(a), out(b), in(b))
	}
}
