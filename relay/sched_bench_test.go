package relay

import (
	"testing"

	"github.com/veilnet/veil/circuit"
)

// BenchmarkSchedPushTake: one cell through a circuit queue and the link
// writer's round robin (100 circuits busy on one link), per cell.
func BenchmarkSchedPushTake(b *testing.B) {
	r := newTestRelay(b, nil)
	s := testSched(r)
	circs := make([]*circEntry, 100)
	for i := range circs {
		circs[i] = testCircuit(r, s, uint32(i+1))
	}
	cell := []circuit.Cell{{Cmd: circuit.CmdRelay}}
	batch := make([]circuit.Cell, 0, writeBatch)
	b.ReportAllocs()
	b.SetBytes(circuit.CellSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.push(circs[i%len(circs)].prevQ, nil, cell...)
		if i%writeBatch == writeBatch-1 {
			batch = s.take(batch[:0])
		}
	}
}
