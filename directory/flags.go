package directory

import (
	"math/bits"
	"strings"
)

// Flags is the set of flags the consensus gives a relay.
type Flags uint16

// The flags, in the order they are written in a consensus "flags" line.
const (
	FlagRunning Flags = 1 << iota // the authorities believe it is up
	FlagValid                     // the authorities accept it in the network
	FlagExit                      // its exit policy allows some port (IsExit)
	FlagGuard                     // suitable as a client's first hop
	FlagFast                      // suitable for high-bandwidth circuits
	FlagStable                    // suitable for long-lived circuits
	FlagHSDir                     // suitable to store onion-service descriptors (reserved)
	FlagBadExit                   // must not be used as an exit (operator decision)

	allFlags = FlagRunning | FlagValid | FlagExit | FlagGuard | FlagFast | FlagStable | FlagHSDir | FlagBadExit
)

var flagNames = [...]string{"Running", "Valid", "Exit", "Guard", "Fast", "Stable", "HSDir", "BadExit"}

// writeFlags writes the "flags" line.
func writeFlags(w *writer, f Flags) {
	if f == 0 {
		w.line("flags")
	} else {
		w.line("flags", f.String())
	}
}

// Has reports whether every flag of want is in f.
func (f Flags) Has(want Flags) bool { return f&want == want }

// String returns the flag names separated by spaces, in canonical order.
func (f Flags) String() string {
	names := make([]string, 0, bits.OnesCount16(uint16(f)))
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	return strings.Join(names, " ")
}

// parseFlags parses flag names, which must be known, distinct and in
// canonical order.
func parseFlags(names []string) (Flags, error) {
	var f Flags
	next := 0
	for _, n := range names {
		i := next
		for i < len(flagNames) && flagNames[i] != n {
			i++
		}
		if i == len(flagNames) {
			return 0, ErrInvalidField
		}
		f |= 1 << i
		next = i + 1
	}
	return f, nil
}
