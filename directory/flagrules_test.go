package directory

import (
	"testing"
	"time"
)

// TestTestingAllFlags: in a young network only relays up at least the
// median uptime are Stable (and so Guard); a relay that joined later stays
// without Guard. TestingAllFlags, for private test networks, gives every
// Running relay Fast, Stable and Guard.
func TestTestingAllFlags(t *testing.T) {
	net, keys := testNetwork(1)
	for _, testing_ := range []bool{false, true} {
		a, err := NewAuthority(AuthorityConfig{Network: net, Schedule: testSchedule, Signer: keys[0], TestingAllFlags: testing_})
		if err != nil {
			t.Fatal(err)
		}
		var late RelayID
		for n := range 4 {
			d, priv := testDescriptor(t, n)
			if _, err := a.AddDescriptor(signDescriptor(t, d, priv), testTime); err != nil {
				t.Fatal(err)
			}
			late = d.ID()
		}
		// Relays 0..2 were up an hour before the last one joined.
		early := testTime.Add(-time.Hour)
		for _, tg := range a.ReachabilityTargets(early) {
			if tg.ID != late {
				a.RecordReachability(tg, true, early)
			}
		}
		markReachable(a, testTime)
		flags := a.assignFlags(testTime)
		if !flags[late].Has(FlagRunning) {
			t.Fatalf("testing=%v: the late relay is not Running", testing_)
		}
		if got := flags[late].Has(FlagGuard | FlagStable | FlagFast); got != testing_ {
			t.Fatalf("testing=%v: late relay flags %v", testing_, flags[late])
		}
	}
}
