package scenario

import (
	"strings"
	"testing"
)

func TestBuiltinsParse(t *testing.T) {
	names := Builtins()
	for _, want := range []string{"tiny", "churn", "authority-outage", "adversary", "create-flood", "tor-1pct"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("built-in %q missing", want)
		}
	}
	for _, n := range names {
		s, err := Load(n)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if s.Name != n {
			t.Errorf("%s: name %q", n, s.Name)
		}
	}
}

const minimal = `
name = "m"
duration = "1m"
[relays]
count = 5
exit_fraction = 0.5
`

func TestParseStrict(t *testing.T) {
	if _, err := Parse([]byte(minimal)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ doc, want string }{
		{minimal + "colour = 1\n", "unknown keys: relays.colour"},
		{minimal + "[network]\nlatnecy_ms = 1\n", "network.latnecy_ms"},
		{strings.Replace(minimal, `"1m"`, `"1 minute"`, 1), "duration"},
		{minimal + "[[clients]]\nmodel = \"torrent\"\ncount = 1\n", "model must be"},
		{minimal + "[[events]]\naction = \"crash\"\n", "fraction"},
		{minimal + "[[events]]\naction = \"partition\"\nregion = \"mars\"\n", "unknown region"},
		{strings.Replace(minimal, "count = 5", "count = 2", 1), "relays.count"},
		{minimal + "handshake_cpu = \"-1ms\"\n", "relays.handshake_cpu"},
		{minimal + "cpu_cores = 300\n", "relays.cpu_cores"},
		{minimal + "[[adversary]]\ncount = 1\nbehaviour = \"sulk\"\n", "behaviour must be tag, drop, delay or passive"},
		{minimal + "[[adversary]]\ncount = 1\nbehaviour = \"delay\"\n", "adversary[0].delay must be in"},
		{minimal + "[[adversary]]\ncount = 1\nbehaviour = \"delay\"\ndelay = \"2m\"\n", "adversary[0].delay must be in"},
		{minimal + "[[adversary]]\ncount = 1\nbehaviour = \"tag\"\ndelay = \"1s\"\n", "delay is only for behaviour delay"},
		{minimal + "[[adversary]]\ncount = 1\nbehaviour = \"tag\"\nfraction = 1.5\n", "adversary[0].fraction"},
		{minimal + "[[adversary]]\ncount = 1\nbehaviour = \"drop\"\ncells = -1\n", "adversary[0].cells"},
		{minimal + "[[adversary]]\ncount = 1\nbehaviour = \"tag\"\nskip = -2\n", "adversary[0].skip"},
		{minimal + "[[adversary]]\ncount = 1\nbehaviour = \"passive\"\ncells = 2\n", "passive relay takes no"},
		{minimal + "[[events]]\naction = \"create-flood\"\n", "events[0].rate"},
		{minimal + "[[events]]\naction = \"create-flood\"\nrate = 10\nattackers = 20000\n", "events[0].attackers"},
		{minimal + "[[events]]\naction = \"create-flood\"\nrate = 10\ntarget = \"relay5\"\n", "no relay \"relay5\""},
		{minimal + "[[events]]\naction = \"create-flood\"\nrate = 10\ntarget = \"relay01\"\n", "no relay"},
		{minimal + "[[events]]\naction = \"crash\"\ncount = 1\nrate = 3\n", "only for create-flood"},
	} {
		_, err := Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one mentioning %q", err, tc.want)
		}
	}
}

// TestAdversaryDefaults: cells defaults to 1 for tag and drop and to
// every cell (0) for delay; fraction to 1; a flood to one attacker; a
// named target may be an honest or an adversary relay.
func TestAdversaryDefaults(t *testing.T) {
	s, err := Parse([]byte(minimal + `
[[adversary]]
count = 2
behaviour = "tag"
[[adversary]]
count = 1
behaviour = "delay"
delay = "1s"
[[adversary]]
count = 1
behaviour = "drop"
cells = 0
[[events]]
action = "create-flood"
rate = 5
target = "bad6"
[[events]]
action = "create-flood"
rate = 5
target = "relay4"
`))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{1, 0, 0} {
		if got := s.Adversary[i].AffectedCells(); got != want || s.Adversary[i].Fraction != 1 {
			t.Errorf("adversary[%d]: cells %d fraction %v, want %d and 1", i, got, s.Adversary[i].Fraction, want)
		}
	}
	if s.Events[0].Attackers != 1 || s.Relays.HandshakeCPU.Duration != DefaultHandshakeCPU || s.Relays.CPUCores != 2 {
		t.Errorf("defaults: %d attackers, handshake_cpu %v, %d cores", s.Events[0].Attackers, s.Relays.HandshakeCPU, s.Relays.CPUCores)
	}
}
