package authority

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/veilnet/veil/directory"
)

// MaxConfigSize bounds an authority configuration file.
const MaxConfigSize = 64 << 10

// FileConfig is the TOML configuration of `veil authority run`
// (docs/authority-operators.md):
//
//	name = "auth1"                      # as in the network file
//	network = "/etc/veil/network.toml"  # the network file
//	data-dir = "/var/lib/veil/auth1"    # signing key and certificate
//	listen = "0.0.0.0:7000"             # optional; default: the network file's address
//	voting-interval = "1h"              # same on every authority
//	vote-delay = "5m"                   # optional; default interval/12
//	sig-delay = "5m"                    # optional; default interval/12
//	bad-exits = ["<64 hex digits>"]     # relays voted BadExit
//	params = ["name=value"]             # consensus parameters proposed
//	log-level = "info"                  # debug, info, warn or error
type FileConfig struct {
	Name           string
	Network        string
	DataDir        string
	Listen         netip.AddrPort // zero: use the network file's address
	VotingInterval time.Duration
	VoteDelay      time.Duration
	SigDelay       time.Duration
	BadExits       []directory.RelayID
	Params         directory.Params
	LogLevel       string
}

type fileConfig struct {
	Name           string   `toml:"name"`
	Network        string   `toml:"network"`
	DataDir        string   `toml:"data-dir"`
	Listen         string   `toml:"listen"`
	VotingInterval string   `toml:"voting-interval"`
	VoteDelay      string   `toml:"vote-delay"`
	SigDelay       string   `toml:"sig-delay"`
	BadExits       []string `toml:"bad-exits"`
	Params         []string `toml:"params"`
	LogLevel       string   `toml:"log-level"`
}

// ParseConfig parses and checks an authority configuration file. Unknown
// keys are errors.
func ParseConfig(b []byte) (fc *FileConfig, err error) {
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("%w: configuration file too large", ErrConfig)
	}
	defer func() {
		if recover() != nil {
			fc, err = nil, fmt.Errorf("%w: configuration file does not parse", ErrConfig)
		}
	}()
	var f fileConfig
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&f)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("%w: unknown key %q", ErrConfig, und[0].String())
	}
	c := &FileConfig{Name: f.Name, Network: f.Network, DataDir: f.DataDir, LogLevel: f.LogLevel}
	if c.Name == "" || c.Network == "" || c.DataDir == "" {
		return nil, fmt.Errorf("%w: name, network and data-dir are required", ErrConfig)
	}
	if f.Listen != "" {
		if c.Listen, err = netip.ParseAddrPort(f.Listen); err != nil {
			return nil, fmt.Errorf("%w: listen: %v", ErrConfig, err)
		}
	}
	if c.VotingInterval, err = parseDuration(f.VotingInterval, time.Hour); err != nil {
		return nil, err
	}
	if c.VoteDelay, err = parseDuration(f.VoteDelay, c.VotingInterval/12); err != nil {
		return nil, err
	}
	if c.SigDelay, err = parseDuration(f.SigDelay, c.VotingInterval/12); err != nil {
		return nil, err
	}
	sched := directory.Schedule{Interval: c.VotingInterval, VoteDelay: c.VoteDelay, SigDelay: c.SigDelay}
	if err := sched.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if len(f.BadExits) > directory.MaxRelays {
		return nil, fmt.Errorf("%w: too many bad-exits", ErrConfig)
	}
	for _, s := range f.BadExits {
		id, err := directory.ParseRelayID(s)
		if err != nil {
			return nil, fmt.Errorf("%w: bad-exits: %q is not a relay ID", ErrConfig, s)
		}
		c.BadExits = append(c.BadExits, id)
	}
	if c.Params, err = directory.ParseParams(f.Params); err != nil {
		return nil, fmt.Errorf("%w: params: %w", ErrConfig, err)
	}
	switch strings.ToLower(c.LogLevel) {
	case "":
		c.LogLevel = "info"
	case "debug", "info", "warn", "error":
		c.LogLevel = strings.ToLower(c.LogLevel)
	default:
		return nil, fmt.Errorf("%w: log-level must be debug, info, warn or error", ErrConfig)
	}
	return c, nil
}

func parseDuration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: duration %q", ErrConfig, s)
	}
	return d, nil
}
