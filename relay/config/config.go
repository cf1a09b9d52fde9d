// Package config reads a relay operator's configuration file
// (docs/relay-config.md documents every field; docs/relay.example.toml is
// a complete example).
//
// The file is TOML and parsing is strict: an unknown key, a value of the
// wrong type and every out-of-range value is refused with the field's name
// and the reason, so a typo never silently becomes a default. Parse is a
// pure function of its input; it touches no file, socket or clock.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/veilnet/veil/directory"
)

// MaxFileSize bounds a configuration file.
const MaxFileSize = 256 << 10

// Defaults and bounds.
const (
	DefaultMetricsListen   = "127.0.0.1:9052"
	DefaultDrainTimeout    = 30 * time.Second
	MaxDrainTimeout        = 24 * time.Hour
	DefaultBandwidthRate   = 10 << 20 // 10 MiB/s
	MinBandwidthRate       = 64 << 10 // below this a relay is no use to anyone
	MaxBandwidth           = 1 << 40
	DefaultDNSCacheSize    = 10000
	MaxDNSCacheSize        = 1 << 20
	DefaultDNSTimeout      = 10 * time.Second
	DefaultConnectTimeout  = 15 * time.Second
	MaxNetworkTimeout      = 5 * time.Minute
	DefaultOnionRotation   = 7 * 24 * time.Hour
	MinOnionRotation       = time.Hour
	DefaultOnionOverlap    = 24 * time.Hour
	DefaultMaxMemory       = 512 << 20
	MinMaxMemory           = 16 << 20
	DefaultLinksPerAddress = 64
	DefaultInboundLinks    = 8192
	DefaultCreateRate      = 20
	DefaultCreateBurst     = 200
	MaxContactLen          = 128
)

// ErrConfig wraps every error Parse returns.
var ErrConfig = errors.New("config")

// Config is a validated relay configuration. Every field holds its final
// value: defaults are filled in.
type Config struct {
	Nickname    string
	DataDir     string // absolute path of the directory holding the keys
	NetworkFile string // path of the network file
	// Listen are the addresses to accept links on (IPv4 and/or IPv6).
	Listen []netip.AddrPort
	// Advertise is the address published in the descriptor.
	Advertise netip.AddrPort
	Contact   string
	Family    []directory.RelayID // sorted, distinct
	// CacheDirectory runs the directory cache on DirListen.
	CacheDirectory bool
	DirListen      netip.AddrPort // valid iff CacheDirectory
	DirAdvertise   netip.AddrPort // valid iff CacheDirectory
	// MetricsListen is the Prometheus endpoint; the zero value disables it.
	MetricsListen netip.AddrPort
	LogLevel      slog.Level
	// LogSensitive lets logs carry client addresses and destinations.
	LogSensitive bool
	DrainTimeout time.Duration

	BandwidthRate  int64 // bytes per second, relayed traffic each way
	BandwidthBurst int64 // bytes
	// AdvertisedBandwidth is what the descriptor publishes: the rate,
	// or the operator's lower figure.
	AdvertisedBandwidth int64

	ExitPolicy     *directory.ExitPolicy // never nil; reject *:* for a non-exit
	DNSCacheSize   int
	DNSTimeout     time.Duration
	ConnectTimeout time.Duration

	MaxLinksPerAddress int
	MaxInboundLinks    int
	CreateRate         float64 // CREATEs per second per client address
	CreateBurst        int
	MaxMemory          int64 // bytes of queued cells and stream data

	OnionKeyRotation time.Duration
	OnionKeyOverlap  time.Duration

	// ExitToPrivate and ExtendToPrivate are for private test networks only.
	ExitToPrivate   bool
	ExtendToPrivate bool
}

// file is the TOML shape. Sizes are any: an integer of bytes or a string
// with a unit.
type file struct {
	Nickname       string   `toml:"nickname"`
	DataDirectory  string   `toml:"data_directory"`
	NetworkFile    string   `toml:"network_file"`
	Listen         []string `toml:"listen"`
	Advertise      string   `toml:"advertise"`
	Contact        string   `toml:"contact"`
	Family         []string `toml:"family"`
	CacheDirectory bool     `toml:"cache_directory"`
	DirListen      string   `toml:"dir_listen"`
	DirAdvertise   string   `toml:"dir_advertise"`
	MetricsListen  *string  `toml:"metrics_listen"`
	LogLevel       string   `toml:"log_level"`
	LogSensitive   bool     `toml:"log_sensitive"`
	DrainTimeout   string   `toml:"drain_timeout"`
	Bandwidth      struct {
		Rate       any `toml:"rate"`
		Burst      any `toml:"burst"`
		Advertised any `toml:"advertised"`
	} `toml:"bandwidth"`
	Exit struct {
		Policy         any    `toml:"policy"`
		DNSCacheSize   *int64 `toml:"dns_cache_size"`
		DNSTimeout     string `toml:"dns_timeout"`
		ConnectTimeout string `toml:"connect_timeout"`
	} `toml:"exit"`
	Limits struct {
		MaxLinksPerAddress *int64   `toml:"max_links_per_address"`
		MaxInboundLinks    *int64   `toml:"max_inbound_links"`
		CreateRate         *float64 `toml:"create_rate"`
		CreateBurst        *int64   `toml:"create_burst"`
		MaxMemory          any      `toml:"max_memory"`
	} `toml:"limits"`
	OnionKey struct {
		Rotation string `toml:"rotation"`
		Overlap  string `toml:"overlap"`
	} `toml:"onion_key"`
	PrivateNetwork struct {
		ExitToPrivate   bool `toml:"exit_to_private"`
		ExtendToPrivate bool `toml:"extend_to_private"`
	} `toml:"private_network"`
}

// fieldError is "config: FIELD: REASON".
func fieldError(field string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
}

// Parse parses and validates a configuration file. Every error wraps
// ErrConfig and names the offending field (or line, for TOML syntax).
func Parse(b []byte) (c *Config, err error) {
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%w: file larger than %d bytes", ErrConfig, MaxFileSize)
	}
	defer func() {
		// The TOML decoder is third-party code: fail closed on a panic.
		if recover() != nil {
			c, err = nil, fmt.Errorf("%w: malformed file", ErrConfig)
		}
	}()
	var f file
	md, err := toml.Decode(string(b), &f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%w: line %d: %s", ErrConfig, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("%w: unknown key %q", ErrConfig, keys[0])
	}
	return f.validate()
}

func (f *file) validate() (*Config, error) {
	c := &Config{}
	var err error
	if !validNickname(f.Nickname) {
		return nil, fieldError("nickname", "required, 1-19 characters of A-Z, a-z, 0-9")
	}
	c.Nickname = f.Nickname
	if f.DataDirectory == "" {
		return nil, fieldError("data_directory", "required")
	}
	if !strings.HasPrefix(f.DataDirectory, "/") {
		return nil, fieldError("data_directory", "must be an absolute path")
	}
	c.DataDir = f.DataDirectory
	if f.NetworkFile == "" {
		return nil, fieldError("network_file", "required")
	}
	c.NetworkFile = f.NetworkFile

	if len(f.Listen) == 0 {
		return nil, fieldError("listen", "at least one address required, e.g. [\"0.0.0.0:9001\", \"[::]:9001\"]")
	}
	if len(f.Listen) > 8 {
		return nil, fieldError("listen", "at most 8 addresses")
	}
	seen := map[netip.AddrPort]bool{}
	for i, s := range f.Listen {
		ap, err := parseAddrPort(s, true)
		if err != nil {
			return nil, fieldError(fmt.Sprintf("listen[%d]", i), "%v", err)
		}
		if seen[ap] {
			return nil, fieldError(fmt.Sprintf("listen[%d]", i), "duplicate address %s", ap)
		}
		seen[ap] = true
		c.Listen = append(c.Listen, ap)
	}
	if f.Advertise == "" {
		if c.Listen[0].Addr().IsUnspecified() {
			return nil, fieldError("advertise", "required when listen[0] is a wildcard address")
		}
		c.Advertise = c.Listen[0]
	} else if c.Advertise, err = parseAddrPort(f.Advertise, false); err != nil {
		return nil, fieldError("advertise", "%v", err)
	}

	if len(f.Contact) > MaxContactLen {
		return nil, fieldError("contact", "longer than %d characters", MaxContactLen)
	}
	for _, r := range f.Contact {
		if r < 0x20 || r > 0x7e {
			return nil, fieldError("contact", "printable ASCII only")
		}
	}
	c.Contact = f.Contact
	if err := c.parseFamily(f.Family); err != nil {
		return nil, err
	}

	c.CacheDirectory = f.CacheDirectory
	if f.CacheDirectory {
		if f.DirListen == "" {
			return nil, fieldError("dir_listen", "required when cache_directory = true")
		}
		if c.DirListen, err = parseAddrPort(f.DirListen, true); err != nil {
			return nil, fieldError("dir_listen", "%v", err)
		}
		switch {
		case f.DirAdvertise != "":
			if c.DirAdvertise, err = parseAddrPort(f.DirAdvertise, false); err != nil {
				return nil, fieldError("dir_advertise", "%v", err)
			}
		case c.DirListen.Addr().IsUnspecified():
			c.DirAdvertise = netip.AddrPortFrom(c.Advertise.Addr(), c.DirListen.Port())
		default:
			c.DirAdvertise = c.DirListen
		}
	} else if f.DirListen != "" || f.DirAdvertise != "" {
		return nil, fieldError("dir_listen", "set only with cache_directory = true")
	}

	ml := DefaultMetricsListen
	if f.MetricsListen != nil {
		ml = *f.MetricsListen
	}
	if ml != "" {
		if c.MetricsListen, err = parseAddrPort(ml, true); err != nil {
			return nil, fieldError("metrics_listen", "%v", err)
		}
	}
	if c.LogLevel, err = parseLevel(f.LogLevel); err != nil {
		return nil, fieldError("log_level", "%v", err)
	}
	c.LogSensitive = f.LogSensitive
	if c.DrainTimeout, err = parseDuration(f.DrainTimeout, DefaultDrainTimeout, 0, MaxDrainTimeout); err != nil {
		return nil, fieldError("drain_timeout", "%v", err)
	}
	if err := c.parseBandwidth(f); err != nil {
		return nil, err
	}
	if err := c.parseExit(f); err != nil {
		return nil, err
	}
	if err := c.parseLimits(f); err != nil {
		return nil, err
	}
	if c.OnionKeyRotation, err = parseDuration(f.OnionKey.Rotation, DefaultOnionRotation, MinOnionRotation, 365*24*time.Hour); err != nil {
		return nil, fieldError("onion_key.rotation", "%v", err)
	}
	if c.OnionKeyOverlap, err = parseDuration(f.OnionKey.Overlap, DefaultOnionOverlap, 3*time.Hour, 30*24*time.Hour); err != nil {
		return nil, fieldError("onion_key.overlap", "%v", err)
	}
	c.ExitToPrivate = f.PrivateNetwork.ExitToPrivate
	c.ExtendToPrivate = f.PrivateNetwork.ExtendToPrivate
	return c, nil
}

func (c *Config) parseFamily(fam []string) error {
	if len(fam) > directory.MaxFamily {
		return fieldError("family", "at most %d relays", directory.MaxFamily)
	}
	seen := map[directory.RelayID]bool{}
	for i, s := range fam {
		id, err := directory.ParseRelayID(strings.TrimPrefix(s, "$"))
		if err != nil {
			return fieldError(fmt.Sprintf("family[%d]", i), "not a 64-digit hex relay fingerprint")
		}
		if seen[id] {
			return fieldError(fmt.Sprintf("family[%d]", i), "duplicate fingerprint")
		}
		seen[id] = true
		c.Family = append(c.Family, id)
	}
	sort.Slice(c.Family, func(i, j int) bool {
		return string(c.Family[i][:]) < string(c.Family[j][:])
	})
	return nil
}

func (c *Config) parseBandwidth(f *file) error {
	var err error
	if c.BandwidthRate, err = parseSize(f.Bandwidth.Rate, DefaultBandwidthRate); err != nil {
		return fieldError("bandwidth.rate", "%v", err)
	}
	if c.BandwidthRate < MinBandwidthRate || c.BandwidthRate > MaxBandwidth {
		return fieldError("bandwidth.rate", "must be between %d and %d bytes per second", MinBandwidthRate, int64(MaxBandwidth))
	}
	if c.BandwidthBurst, err = parseSize(f.Bandwidth.Burst, 2*c.BandwidthRate); err != nil {
		return fieldError("bandwidth.burst", "%v", err)
	}
	if c.BandwidthBurst < c.BandwidthRate || c.BandwidthBurst > MaxBandwidth {
		return fieldError("bandwidth.burst", "must be at least bandwidth.rate and at most %d bytes", int64(MaxBandwidth))
	}
	if c.AdvertisedBandwidth, err = parseSize(f.Bandwidth.Advertised, c.BandwidthRate); err != nil {
		return fieldError("bandwidth.advertised", "%v", err)
	}
	if c.AdvertisedBandwidth <= 0 || c.AdvertisedBandwidth > c.BandwidthRate {
		return fieldError("bandwidth.advertised", "must be positive and at most bandwidth.rate")
	}
	return nil
}

func (c *Config) parseExit(f *file) error {
	var err error
	switch p := f.Exit.Policy.(type) {
	case nil:
		c.ExitPolicy = directory.RejectAllPolicy()
	case string:
		c.ExitPolicy, err = directory.ParseExitPolicy(p)
	case []any:
		lines := make([]string, len(p))
		for i, l := range p {
			s, ok := l.(string)
			if !ok {
				return fieldError(fmt.Sprintf("exit.policy[%d]", i), "must be a string")
			}
			lines[i] = s
		}
		c.ExitPolicy, err = directory.ParseExitPolicyLines(lines)
	default:
		return fieldError("exit.policy", "must be a string or a list of strings")
	}
	if err != nil {
		return fieldError("exit.policy", "%v", err)
	}
	c.DNSCacheSize = DefaultDNSCacheSize
	if v := f.Exit.DNSCacheSize; v != nil {
		if *v < 0 || *v > MaxDNSCacheSize {
			return fieldError("exit.dns_cache_size", "must be between 0 and %d", MaxDNSCacheSize)
		}
		c.DNSCacheSize = int(*v)
	}
	if c.DNSTimeout, err = parseDuration(f.Exit.DNSTimeout, DefaultDNSTimeout, time.Second, MaxNetworkTimeout); err != nil {
		return fieldError("exit.dns_timeout", "%v", err)
	}
	if c.ConnectTimeout, err = parseDuration(f.Exit.ConnectTimeout, DefaultConnectTimeout, time.Second, MaxNetworkTimeout); err != nil {
		return fieldError("exit.connect_timeout", "%v", err)
	}
	return nil
}

func (c *Config) parseLimits(f *file) error {
	l := &f.Limits
	var err error
	if c.MaxLinksPerAddress, err = intIn(l.MaxLinksPerAddress, DefaultLinksPerAddress, 1, 1<<16); err != nil {
		return fieldError("limits.max_links_per_address", "%v", err)
	}
	if c.MaxInboundLinks, err = intIn(l.MaxInboundLinks, DefaultInboundLinks, 1, 1<<20); err != nil {
		return fieldError("limits.max_inbound_links", "%v", err)
	}
	c.CreateRate = DefaultCreateRate
	if l.CreateRate != nil {
		if !(*l.CreateRate > 0 && *l.CreateRate <= 1e6) { // also refuses NaN
			return fieldError("limits.create_rate", "must be above 0 and at most 1000000 per second")
		}
		c.CreateRate = *l.CreateRate
	}
	if c.CreateBurst, err = intIn(l.CreateBurst, DefaultCreateBurst, 1, 1<<20); err != nil {
		return fieldError("limits.create_burst", "%v", err)
	}
	if c.MaxMemory, err = parseSize(l.MaxMemory, DefaultMaxMemory); err != nil {
		return fieldError("limits.max_memory", "%v", err)
	}
	if c.MaxMemory < MinMaxMemory || c.MaxMemory > MaxBandwidth {
		return fieldError("limits.max_memory", "must be between %d and %d bytes", MinMaxMemory, int64(MaxBandwidth))
	}
	return nil
}

func intIn(v *int64, def, lo, hi int64) (int, error) {
	if v == nil {
		return int(def), nil
	}
	if *v < lo || *v > hi {
		return 0, fmt.Errorf("must be between %d and %d", lo, hi)
	}
	return int(*v), nil
}

func validNickname(s string) bool {
	if len(s) < 1 || len(s) > 19 {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// parseAddrPort parses "IP:port" or "[IPv6]:port". A wildcard address is
// allowed only for listening; port 0 never.
func parseAddrPort(s string, listen bool) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not IP:port or [IPv6]:port", s)
	}
	a := ap.Addr()
	switch {
	case ap.Port() == 0:
		return netip.AddrPort{}, errors.New("port 0 is not allowed")
	case a.Zone() != "":
		return netip.AddrPort{}, errors.New("zoned IPv6 addresses are not allowed")
	case a.Is4In6():
		return netip.AddrPort{}, errors.New("write IPv4 addresses as a.b.c.d")
	case !listen && a.IsUnspecified():
		return netip.AddrPort{}, errors.New("a wildcard address cannot be advertised")
	case a.IsMulticast():
		return netip.AddrPort{}, errors.New("multicast address")
	}
	return ap, nil
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}

// parseDuration parses a Go duration ("30s", "168h"); "" gives def.
func parseDuration(s string, def, lo, hi time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like \"30s\" or \"168h\"", s)
	}
	if d < lo || d > hi {
		return 0, fmt.Errorf("must be between %v and %v", lo, hi)
	}
	return d, nil
}
