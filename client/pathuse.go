package client

// PathUse is one circuit's path-bias bookkeeping (guards.go, client.md):
// whether a stream request was sent on it, whether a cell from the far end
// was accepted after that, and whether its outcome was already counted
// against its guard. Each circuit's outcome is counted exactly once: a
// success at the first accepted far-end cell after a stream request, or,
// when it closes uncounted past the guard, a success only if it was fully
// built and never asked to carry anything (a used circuit that never
// answered, or one that died while extending, is a failure). The client and
// the simulator both keep one per circuit, so the rule lives here once.
type PathUse struct {
	used, answered, counted bool
}

// StreamRequested records that a stream request was sent on the circuit.
func (p *PathUse) StreamRequested() { p.used = true }

// Answered records a cell from the far end that the circuit accepted. It
// reports true once, when the circuit first counts as a success.
func (p *PathUse) Answered() bool {
	if !p.used || p.answered {
		return false
	}
	p.answered = true
	if p.counted {
		return false
	}
	p.counted = true
	return true
}

// Closed records that the circuit closed with hops of its pathLen hops
// built. count says whether to count an outcome now; success is it.
func (p *PathUse) Closed(hops, pathLen int) (count, success bool) {
	if p.counted || hops == 0 {
		return false, false
	}
	p.counted = true
	return true, hops == pathLen && !p.used
}
