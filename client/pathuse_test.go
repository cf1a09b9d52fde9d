package client

import "testing"

// The rule that both the client and the simulator follow: every circuit's
// outcome is counted once, and only an answered or a built-and-unused
// circuit is a success.
func TestPathUseCountsEachCircuitOnce(t *testing.T) {
	type outcome struct{ count, success bool }
	cases := []struct {
		name      string
		requested bool
		answers   int
		hops, len int
		answered  bool // Answered reported a success
		atClose   outcome
	}{
		{"built, never used", false, 0, 3, 3, false, outcome{true, true}},
		{"built, never used, far-end cells ignored", false, 2, 3, 3, false, outcome{true, true}},
		{"used and answered", true, 1, 3, 3, true, outcome{false, false}},
		{"used and answered twice", true, 2, 3, 3, true, outcome{false, false}},
		{"used, never answered", true, 0, 3, 3, false, outcome{true, false}},
		{"died while extending", false, 0, 2, 3, false, outcome{true, false}},
		{"never reached the guard", false, 0, 0, 3, false, outcome{false, false}},
	}
	for _, tc := range cases {
		var p PathUse
		if tc.requested {
			p.StreamRequested()
		}
		successes := 0
		for i := 0; i < tc.answers; i++ {
			if p.Answered() {
				successes++
			}
		}
		if got := successes == 1; got != tc.answered || successes > 1 {
			t.Errorf("%s: Answered reported %d successes", tc.name, successes)
		}
		count, ok := p.Closed(tc.hops, tc.len)
		if (outcome{count, ok}) != tc.atClose {
			t.Errorf("%s: Closed = (%v, %v), want %+v", tc.name, count, ok, tc.atClose)
		}
		if count, _ := p.Closed(tc.hops, tc.len); count {
			t.Errorf("%s: a second Closed counted again", tc.name)
		}
	}
}
