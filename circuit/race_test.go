//go:build race

package circuit

// raceEnabled: the race detector changes what allocations weigh.
const raceEnabled = true
