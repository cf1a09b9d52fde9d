package authority

import (
	"strings"
	"testing"
	"time"
)

const sampleConfig = `name = "auth1"
network = "/etc/veil/network.toml"
data-dir = "/var/lib/veil/auth1"
listen = "127.0.0.1:7000"
voting-interval = "1h"
vote-delay = "5m"
sig-delay = "5m"
bad-exits = ["9A2BAF00EA794FC75DF0FF99AD8B8181D26A7AECEF6A82C1F08BCA4D8942CA1B"]
params = ["bwweightscale=10000", "circwindow=1000"]
log-level = "debug"
`

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(sampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "auth1" || c.VotingInterval != time.Hour || c.SigDelay != 5*time.Minute || len(c.BadExits) != 1 ||
		c.Params.Get("circwindow", 0) != 1000 || c.LogLevel != "debug" || c.Listen.Port() != 7000 {
		t.Errorf("parsed %+v", c)
	}
	for _, bad := range []string{
		strings.Replace(sampleConfig, "name =", "nme =", 1),                  // unknown key, name missing
		strings.Replace(sampleConfig, `"1h"`, `"1x"`, 1),                     // bad duration
		strings.Replace(sampleConfig, `"5m"`, `"59m"`, 1),                    // delays too long
		strings.Replace(sampleConfig, `["9A`, `["ZZ`, 1),                     // bad relay ID
		strings.Replace(sampleConfig, "circwindow=1000", "circwindow=-1", 1), // bad param
		strings.Replace(sampleConfig, `"debug"`, `"loud"`, 1),
		sampleConfig + "extra = 1\n",
	} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

// FuzzParseConfig: ParseConfig never panics, and what it accepts has the
// required fields and a valid schedule.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(sampleConfig))
	f.Add([]byte("name = \"a\"\nnetwork = \"n\"\ndata-dir = \"d\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		if c.Name == "" || c.Network == "" || c.DataDir == "" || c.VotingInterval <= c.VoteDelay+c.SigDelay {
			t.Fatalf("accepted an invalid configuration: %+v", c)
		}
	})
}
