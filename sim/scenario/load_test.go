package scenario

import (
	"strings"
	"testing"
)

// TestTorScenariosCarryTheirLoad: tor-1pct and tor-10pct have the sizes
// docs/simulator.md derives (1% and 10% of Tor: relays, and one web
// client per 100 users).
func TestTorScenariosCarryTheirLoad(t *testing.T) {
	for _, tc := range []struct {
		name           string
		relays, users  int
		perf, webUsers int
	}{
		{"tor-1pct", 65, 25000, 8, 100},
		{"tor-10pct", 650, 250000, 25, 100},
	} {
		s, err := Load(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		users, perf := 0, 0
		for _, c := range s.Clients {
			switch c.Model {
			case "web":
				users += c.Count * c.Users
				if c.Users != tc.webUsers {
					t.Errorf("%s: a web client stands for %d users, want %d", tc.name, c.Users, tc.webUsers)
				}
			case "onionperf":
				perf += c.Count
			}
		}
		if s.Relays.Count != tc.relays || users != tc.users || perf != tc.perf {
			t.Errorf("%s: %d relays, %d users, %d OnionPerf clients; want %d, %d, %d",
				tc.name, s.Relays.Count, users, perf, tc.relays, tc.users, tc.perf)
		}
	}
}

func TestUsersDefaultAndRange(t *testing.T) {
	web := minimal + "[[clients]]\nmodel = \"web\"\ncount = 1\npage_kib = 10\nthink = \"1s\"\n"
	s, err := Parse([]byte(web))
	if err != nil {
		t.Fatal(err)
	}
	if s.Clients[0].Users != 1 {
		t.Errorf("users defaults to %d, want 1", s.Clients[0].Users)
	}
	for _, bad := range []string{"users = -1\n", "users = 10001\n"} {
		if _, err := Parse([]byte(web + bad)); err == nil || !strings.Contains(err.Error(), "users") {
			t.Errorf("%q: error %v, want one naming users", bad, err)
		}
	}
}
