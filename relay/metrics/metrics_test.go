package metrics

import (
	"runtime"
	"testing"
)

// The registry exports the live heap and the count of finished
// collections, which `veil bench` reads after SIGUSR1 to charge memory
// to circuits and streams without counting garbage.
func TestExportsLiveHeapAndGCCycles(t *testing.T) {
	m := New()
	value := func(name string) (float64, bool) {
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == name && len(f.GetMetric()) == 1 {
				mt := f.GetMetric()[0]
				if g := mt.GetGauge(); g != nil {
					return g.GetValue(), true
				}
				if c := mt.GetCounter(); c != nil {
					return c.GetValue(), true
				}
			}
		}
		return 0, false
	}
	before, ok := value("go_gc_cycles_total_gc_cycles_total")
	if !ok {
		t.Fatal("go_gc_cycles_total_gc_cycles_total not exported")
	}
	runtime.GC()
	after, _ := value("go_gc_cycles_total_gc_cycles_total")
	if after <= before {
		t.Fatalf("GC cycles %v after a collection, %v before", after, before)
	}
	if live, ok := value("go_gc_heap_live_bytes"); !ok || live <= 0 {
		t.Fatalf("go_gc_heap_live_bytes = %v (exported: %v)", live, ok)
	}
}
