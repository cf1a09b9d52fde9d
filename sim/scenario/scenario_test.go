package scenario

import (
	"strings"
	"testing"
)

func TestBuiltinsParse(t *testing.T) {
	names := Builtins()
	for _, want := range []string{"tiny", "churn", "authority-outage", "adversary", "tor-1pct"} {
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
	} {
		_, err := Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one mentioning %q", err, tc.want)
		}
	}
}
