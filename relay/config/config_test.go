package config

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

const minimal = `
nickname = "relay1"
data_directory = "/var/lib/veil"
network_file = "/etc/veil/network.toml"
listen = ["192.0.2.1:9001"]
`

const fam1 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
const fam2 = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"

const full = `
nickname = "relay1"
data_directory = "/var/lib/veil"
network_file = "/etc/veil/network.toml"
listen = ["0.0.0.0:9001", "[::]:9001"]
advertise = "[2001:db8::5]:443"
contact = "ops at example dot org"
family = ["$` + fam2 + `", "` + fam1 + `"]
cache_directory = true
dir_listen = "0.0.0.0:9030"
metrics_listen = "[::1]:9100"
log_level = "debug"
log_sensitive = true
drain_timeout = "2m"

[bandwidth]
rate = "80 Mbit"
burst = "20 MB"
advertised = 5000000

[exit]
policy = ["accept *:80", "accept [::]/0:443", "reject *:*"]
dns_cache_size = 500
dns_timeout = "5s"
connect_timeout = "20s"

[limits]
max_links_per_address = 8
max_inbound_links = 100
create_rate = 2.5
create_burst = 10
max_memory = "1 GiB"

[onion_key]
rotation = "72h"
overlap = "12h"

[private_network]
exit_to_private = true
extend_to_private = true
`

func TestParseMinimalDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Nickname: "relay1", DataDir: "/var/lib/veil", NetworkFile: "/etc/veil/network.toml",
		Listen: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:9001")}, Advertise: netip.MustParseAddrPort("192.0.2.1:9001"),
		MetricsListen: netip.MustParseAddrPort(DefaultMetricsListen), LogLevel: slog.LevelInfo, DrainTimeout: DefaultDrainTimeout,
		BandwidthRate: DefaultBandwidthRate, BandwidthBurst: 2 * DefaultBandwidthRate, AdvertisedBandwidth: DefaultBandwidthRate,
		DNSCacheSize: DefaultDNSCacheSize, DNSTimeout: DefaultDNSTimeout, ConnectTimeout: DefaultConnectTimeout,
		MaxLinksPerAddress: DefaultLinksPerAddress, MaxInboundLinks: DefaultInboundLinks, CreateRate: DefaultCreateRate,
		CreateBurst: DefaultCreateBurst, MaxMemory: DefaultMaxMemory, OnionKeyRotation: DefaultOnionRotation, OnionKeyOverlap: DefaultOnionOverlap,
	}
	if c.ExitPolicy == nil || c.ExitPolicy.IsExit() {
		t.Fatalf("default exit policy %v, want reject *:*", c.ExitPolicy)
	}
	c.ExitPolicy = nil
	if !equalConfig(c, &want) {
		t.Fatalf("got\n%+v\nwant\n%+v", *c, want)
	}
}

func equalConfig(a, b *Config) bool {
	if len(a.Listen) != len(b.Listen) || len(a.Family) != len(b.Family) {
		return false
	}
	for i := range a.Listen {
		if a.Listen[i] != b.Listen[i] {
			return false
		}
	}
	x, y := *a, *b
	x.Listen, y.Listen, x.Family, y.Family = nil, nil, nil, nil
	return x.Nickname == y.Nickname && x.DataDir == y.DataDir && x.NetworkFile == y.NetworkFile &&
		x.Advertise == y.Advertise && x.MetricsListen == y.MetricsListen && x.LogLevel == y.LogLevel &&
		x.DrainTimeout == y.DrainTimeout && x.BandwidthRate == y.BandwidthRate && x.BandwidthBurst == y.BandwidthBurst &&
		x.AdvertisedBandwidth == y.AdvertisedBandwidth && x.DNSCacheSize == y.DNSCacheSize && x.DNSTimeout == y.DNSTimeout &&
		x.ConnectTimeout == y.ConnectTimeout && x.MaxLinksPerAddress == y.MaxLinksPerAddress && x.MaxInboundLinks == y.MaxInboundLinks &&
		x.CreateRate == y.CreateRate && x.CreateBurst == y.CreateBurst && x.MaxMemory == y.MaxMemory &&
		x.OnionKeyRotation == y.OnionKeyRotation && x.OnionKeyOverlap == y.OnionKeyOverlap && x.Contact == y.Contact &&
		x.CacheDirectory == y.CacheDirectory && x.DirListen == y.DirListen && x.DirAdvertise == y.DirAdvertise &&
		x.LogSensitive == y.LogSensitive && x.ExitToPrivate == y.ExitToPrivate && x.ExtendToPrivate == y.ExtendToPrivate
}

// TestParseEveryField sets every field to a non-default value.
func TestParseEveryField(t *testing.T) {
	c, err := Parse([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"listen", len(c.Listen) == 2 && c.Listen[1] == netip.MustParseAddrPort("[::]:9001")},
		{"advertise", c.Advertise == netip.MustParseAddrPort("[2001:db8::5]:443")},
		{"contact", c.Contact == "ops at example dot org"},
		{"family sorted", len(c.Family) == 2 && c.Family[0].String() < c.Family[1].String()},
		{"cache_directory", c.CacheDirectory && c.DirListen == netip.MustParseAddrPort("0.0.0.0:9030")},
		{"dir_advertise derived", c.DirAdvertise == netip.MustParseAddrPort("[2001:db8::5]:9030")},
		{"metrics_listen", c.MetricsListen == netip.MustParseAddrPort("[::1]:9100")},
		{"log_level", c.LogLevel == slog.LevelDebug},
		{"log_sensitive", c.LogSensitive},
		{"drain_timeout", c.DrainTimeout == 2*time.Minute},
		{"bandwidth.rate", c.BandwidthRate == 10_000_000},
		{"bandwidth.burst", c.BandwidthBurst == 20_000_000},
		{"bandwidth.advertised", c.AdvertisedBandwidth == 5_000_000},
		{"exit.policy", c.ExitPolicy.Allows(netip.MustParseAddr("2001:db8::1"), 443) && !c.ExitPolicy.Allows(netip.MustParseAddr("192.0.2.1"), 443) && c.ExitPolicy.Allows(netip.MustParseAddr("192.0.2.1"), 80)},
		{"exit.dns_cache_size", c.DNSCacheSize == 500},
		{"exit.dns_timeout", c.DNSTimeout == 5*time.Second},
		{"exit.connect_timeout", c.ConnectTimeout == 20*time.Second},
		{"limits.max_links_per_address", c.MaxLinksPerAddress == 8},
		{"limits.max_inbound_links", c.MaxInboundLinks == 100},
		{"limits.create_rate", c.CreateRate == 2.5},
		{"limits.create_burst", c.CreateBurst == 10},
		{"limits.max_memory", c.MaxMemory == 1<<30},
		{"onion_key.rotation", c.OnionKeyRotation == 72*time.Hour},
		{"onion_key.overlap", c.OnionKeyOverlap == 12*time.Hour},
		{"private_network", c.ExitToPrivate && c.ExtendToPrivate},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s not parsed as written: %+v", ch.name, *c)
		}
	}
}

func TestExitPolicyAsString(t *testing.T) {
	c, err := Parse([]byte(minimal + `[exit]
policy = "accept *:443, reject *:*"
`))
	if err != nil {
		t.Fatal(err)
	}
	if !c.ExitPolicy.AllowsPort(443) || c.ExitPolicy.AllowsPort(80) {
		t.Fatalf("policy %v", c.ExitPolicy)
	}
}

func TestMetricsDisabled(t *testing.T) {
	c, err := Parse([]byte(minimal + `metrics_listen = ""` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsListen.IsValid() {
		t.Fatal("metrics_listen = \"\" did not disable metrics")
	}
}

// replace swaps or adds one top-level line of minimal.
func withLine(key, line string) string {
	var out []string
	found := false
	for _, l := range strings.Split(minimal, "\n") {
		if strings.HasPrefix(l, key+" =") {
			found = true
			if line != "" {
				out = append(out, line)
			}
			continue
		}
		out = append(out, l)
	}
	if !found {
		out = append(out, line)
	}
	return strings.Join(out, "\n") + "\n"
}

// TestParseRefusesBadValues: every bad value is refused, and the error
// names the field.
func TestParseRefusesBadValues(t *testing.T) {
	cases := []struct {
		name, doc, field string
	}{
		{"syntax", minimal + "nickname = \n", "line"},
		{"unknown key", minimal + "nick = \"x\"\n", `"nick"`},
		{"unknown section key", minimal + "[bandwidth]\nrat = 1\n", `"bandwidth.rat"`},
		{"unknown section", minimal + "[bandwith]\nrate = 1\n", `"bandwith`},
		{"wrong type", withLine("nickname", "nickname = 5"), "nickname"},
		{"nickname missing", withLine("nickname", ""), "nickname"},
		{"nickname long", withLine("nickname", `nickname = "abcdefghijklmnopqrst"`), "nickname"},
		{"nickname chars", withLine("nickname", `nickname = "my-relay"`), "nickname"},
		{"data_directory missing", withLine("data_directory", ""), "data_directory"},
		{"data_directory relative", withLine("data_directory", `data_directory = "veil"`), "data_directory"},
		{"network_file missing", withLine("network_file", ""), "network_file"},
		{"listen missing", withLine("listen", ""), "listen"},
		{"listen empty", withLine("listen", "listen = []"), "listen"},
		{"listen hostname", withLine("listen", `listen = ["example.org:9001"]`), "listen[0]"},
		{"listen no port", withLine("listen", `listen = ["192.0.2.1"]`), "listen[0]"},
		{"listen port 0", withLine("listen", `listen = ["192.0.2.1:0"]`), "listen[0]"},
		{"listen port big", withLine("listen", `listen = ["192.0.2.1:70000"]`), "listen[0]"},
		{"listen v6 unbracketed", withLine("listen", `listen = ["::1:9001", "2001:db8::1:9001"]`), "listen[0]"},
		{"listen zone", withLine("listen", `listen = ["[fe80::1%eth0]:9001"]`), "listen[0]"},
		{"listen duplicate", withLine("listen", `listen = ["192.0.2.1:9001", "192.0.2.1:9001"]`), "listen[1]"},
		{"listen multicast", withLine("listen", `listen = ["224.0.0.1:9001"]`), "listen[0]"},
		{"listen mapped", withLine("listen", `listen = ["[::ffff:192.0.2.1]:9001"]`), "listen[0]"},
		{"wildcard needs advertise", withLine("listen", `listen = ["0.0.0.0:9001"]`), "advertise"},
		{"advertise wildcard", minimal + `advertise = "0.0.0.0:9001"` + "\n", "advertise"},
		{"advertise bad", minimal + `advertise = "192.0.2.1"` + "\n", "advertise"},
		{"contact long", minimal + `contact = "` + strings.Repeat("x", 129) + `"` + "\n", "contact"},
		{"contact control", minimal + `contact = "a\u0007b"` + "\n", "contact"},
		{"contact non-ascii", minimal + `contact = "é"` + "\n", "contact"},
		{"family bad", minimal + `family = ["ABC"]` + "\n", "family[0]"},
		{"family duplicate", minimal + `family = ["` + fam1 + `", "$` + fam1 + `"]` + "\n", "family[1]"},
		{"dir_listen missing", minimal + "cache_directory = true\n", "dir_listen"},
		{"dir_listen bad", minimal + "cache_directory = true\ndir_listen = \"x\"\n", "dir_listen"},
		{"dir_advertise bad", minimal + "cache_directory = true\ndir_listen = \"0.0.0.0:9030\"\ndir_advertise = \"[::]:9030\"\n", "dir_advertise"},
		{"dir_listen without cache", minimal + "dir_listen = \"0.0.0.0:9030\"\n", "dir_listen"},
		{"metrics_listen bad", minimal + `metrics_listen = "localhost:9052"` + "\n", "metrics_listen"},
		{"log_level", minimal + `log_level = "verbose"` + "\n", "log_level"},
		{"drain_timeout bad", minimal + `drain_timeout = "30"` + "\n", "drain_timeout"},
		{"drain_timeout negative", minimal + `drain_timeout = "-1s"` + "\n", "drain_timeout"},
		{"drain_timeout huge", minimal + `drain_timeout = "25h"` + "\n", "drain_timeout"},
		{"rate low", minimal + "[bandwidth]\nrate = 1000\n", "bandwidth.rate"},
		{"rate unit", minimal + "[bandwidth]\nrate = \"10 parsecs\"\n", "bandwidth.rate"},
		{"rate negative", minimal + "[bandwidth]\nrate = -5\n", "bandwidth.rate"},
		{"rate float", minimal + "[bandwidth]\nrate = 1.5\n", "bandwidth.rate"},
		{"rate huge", minimal + "[bandwidth]\nrate = \"5000 TB\"\n", "bandwidth.rate"},
		{"burst below rate", minimal + "[bandwidth]\nrate = \"1 MB\"\nburst = \"500 KB\"\n", "bandwidth.burst"},
		{"advertised above rate", minimal + "[bandwidth]\nrate = \"1 MB\"\nadvertised = \"2 MB\"\n", "bandwidth.advertised"},
		{"advertised zero", minimal + "[bandwidth]\nadvertised = 0\n", "bandwidth.advertised"},
		{"policy syntax", minimal + "[exit]\npolicy = \"allow *:80\"\n", "exit.policy"},
		{"policy port", minimal + "[exit]\npolicy = [\"accept *:99999\"]\n", "exit.policy"},
		{"policy item type", minimal + "[exit]\npolicy = [1]\n", "exit.policy[0]"},
		{"policy type", minimal + "[exit]\npolicy = 1\n", "exit.policy"},
		{"dns_cache_size", minimal + "[exit]\ndns_cache_size = -1\n", "exit.dns_cache_size"},
		{"dns_cache_size huge", minimal + "[exit]\ndns_cache_size = 100000000\n", "exit.dns_cache_size"},
		{"dns_timeout", minimal + "[exit]\ndns_timeout = \"1ms\"\n", "exit.dns_timeout"},
		{"connect_timeout", minimal + "[exit]\nconnect_timeout = \"10m\"\n", "exit.connect_timeout"},
		{"links per address", minimal + "[limits]\nmax_links_per_address = 0\n", "limits.max_links_per_address"},
		{"inbound links", minimal + "[limits]\nmax_inbound_links = -3\n", "limits.max_inbound_links"},
		{"create_rate zero", minimal + "[limits]\ncreate_rate = 0.0\n", "limits.create_rate"},
		{"create_rate nan", minimal + "[limits]\ncreate_rate = nan\n", "limits.create_rate"},
		{"create_rate inf", minimal + "[limits]\ncreate_rate = inf\n", "limits.create_rate"},
		{"create_burst", minimal + "[limits]\ncreate_burst = 0\n", "limits.create_burst"},
		{"max_memory small", minimal + "[limits]\nmax_memory = \"1 MB\"\n", "limits.max_memory"},
		{"rotation short", minimal + "[onion_key]\nrotation = \"10m\"\n", "onion_key.rotation"},
		{"overlap short", minimal + "[onion_key]\noverlap = \"1h\"\n", "onion_key.overlap"},
		{"private wrong type", minimal + "[private_network]\nexit_to_private = \"yes\"\n", "exit_to_private"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %q", err, tc.field)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{
		"0": 0, "1024": 1024, "10 MB": 10_000_000, "10MB": 10_000_000, "8 MiB": 8 << 20, "1.5 KiB": 1536,
		"100 Mbit": 12_500_000, "1 gbit": 125_000_000, "7 bytes": 7, " 2 kb ": 2000,
	} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "MB", "-1 MB", "1..2 MB", "1 XB", "NaN", "1e3 MB", "99999999999 TB"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) accepted", s)
		}
	}
}

// TestExampleConfig keeps docs/relay.example.toml valid.
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile("../../docs/relay.example.toml")
	if err != nil {
		t.Skip("example config not present:", err)
	}
	if _, err := Parse(b); err != nil {
		t.Fatal(err)
	}
}

// FuzzParse: Parse never panics, returns a config or an error wrapping
// ErrConfig, and an accepted config satisfies the documented invariants.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(full))
	f.Add([]byte(minimal + "[bandwidth]\nrate = \"1.5 GiB\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrConfig) || c != nil {
				t.Fatalf("bad error contract: %v", err)
			}
			return
		}
		if c.ExitPolicy == nil || len(c.Listen) == 0 || !c.Advertise.IsValid() || c.Advertise.Addr().IsUnspecified() ||
			c.BandwidthBurst < c.BandwidthRate || c.AdvertisedBandwidth > c.BandwidthRate || c.MaxMemory < MinMaxMemory ||
			c.CreateRate <= 0 || c.CreateBurst < 1 || c.CacheDirectory != c.DirListen.IsValid() {
			t.Fatalf("accepted config breaks an invariant: %+v", *c)
		}
	})
}
