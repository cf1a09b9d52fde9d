package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits maps a unit (lower case) to bytes. Decimal and binary
// prefixes, and bits for operators who think in link speeds.
var sizeUnits = map[string]float64{
	"b": 1, "byte": 1, "bytes": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	"kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
}

var errSize = errors.New(`must be a whole number of bytes or a string like "10 MB", "8 MiB" or "100 Mbit"`)

// parseSize reads a size: a TOML integer of bytes or a string "N unit";
// nil gives def. The result is a non-negative whole number of bytes.
func parseSize(v any, def int64) (int64, error) {
	switch x := v.(type) {
	case nil:
		return def, nil
	case int64:
		if x < 0 {
			return 0, errors.New("must not be negative")
		}
		return x, nil
	case string:
		return ParseSize(x)
	}
	return 0, errSize
}

// ParseSize parses "N unit" (space optional), e.g. "10 MB", "1.5GiB",
// "100 Mbit", or a bare number of bytes.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	num, unit := s, "b"
	if i >= 0 {
		num, unit = s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	}
	mult, ok := sizeUnits[unit]
	if !ok || num == "" {
		return 0, errSize
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return 0, errSize
	}
	b := f * mult
	if b >= 1<<62 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(b), nil
}
