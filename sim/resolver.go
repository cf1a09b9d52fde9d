package sim

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/veilnet/veil/relay/exitdns"
)

// LoopbackResolver is the exit resolver of a private test network: it
// answers "localhost" and names under ".localhost" (RFC 6761, any case,
// with or without the final dot) with 127.0.0.1 and ::1, and refuses every
// other name without asking anyone, so nothing a test network does can
// reach a DNS server off the machine.
type LoopbackResolver struct{}

var _ exitdns.Resolver = LoopbackResolver{}

// ErrNotLocal is returned for names a test network does not resolve.
var ErrNotLocal = errors.New("sim: a test network resolves only localhost names")

// Resolve implements exitdns.Resolver.
func (LoopbackResolver) Resolve(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}, time.Minute, nil
	}
	return nil, 0, ErrNotLocal
}
