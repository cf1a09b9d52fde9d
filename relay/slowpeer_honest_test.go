package relay

import (
	"bytes"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/relay/metrics"
)

// TestAttackSlowReaderSparesHonestDownload: during a sustained slow-read
// attack (many circuits, each stalled with a congestion window of cells,
// together far over the relay's memory cap), an honest client's 4 MiB
// download through the same exit completes. The OOM handler closes the
// circuits whose oldest queued cell has waited longest (oom.go); when it
// closed the biggest ones first, the flowing honest circuit, which briefly
// holds more than any stalled one, was among the first closed.
//
// The cap (1 MiB) is above one honest circuit's window; the attack is
// left to stand for 300 ms, as a real one would, before the download
// starts, so that its queues are older than the honest queue's head.
func TestAttackSlowReaderSparesHonestDownload(t *testing.T) {
	const maxMemory = 1 << 20
	r, spec, cancel, done := startSlowReadRelay(t, maxMemory)
	defer func() { cancel(); <-done }()
	endless, _ := bulkServer(t, -1)
	fixed, want := bulkServer(t, 4<<20)
	slowReadAttack(t, spec, slowReadCircuits, endless)
	oom := r.metrics.Refusals.WithLabelValues(metrics.RefuseOOM)
	waitFor(t, func() bool { return metricValue(oom) > 0 })
	time.Sleep(300 * time.Millisecond) // a sustained attack, not a race

	link, err := dialFrom(t, spec, "127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	h := oneHopOver(t, link, spec)
	id, err := h.cc.OpenStream("127.0.0.1", fixed, &h.acts)
	if err != nil {
		t.Fatal(err)
	}
	h.flush()
	h.recv()
	if len(h.acts.Connected) != 1 {
		t.Fatalf("honest stream: %+v", h.acts.Ends)
	}
	h.acts.Reset()
	got := h.download(id)
	t.Logf("%v circuits closed by the OOM handler", metricValue(oom))
	if !bytes.Equal(got, want) {
		t.Fatalf("honest download: %d bytes (sha256 %x), want %d", len(got), sha256.Sum256(got), len(want))
	}
}

// download reads stream id of h to its end, acknowledging as a client
// does (SENDMEs and XONs go out as the state machine asks).
func (h *oneHop) download(id uint16) []byte {
	var got []byte
	for {
		c := h.next()
		if c.Cmd != circuit.CmdRelay {
			h.t.Fatalf("after %d bytes: got cell %d (reason %d), want RELAY", len(got), c.Cmd, c.Payload[0])
		}
		if err := h.cc.HandleBackward(&c.Payload, &h.acts); err != nil {
			h.t.Fatal(err)
		}
		cells := 0
		for _, d := range h.acts.Data {
			got = append(got, d.Data...)
			cells++
		}
		ended := len(h.acts.Ends) > 0 || len(h.acts.Finished) > 0
		if cells > 0 {
			if err := h.cc.StreamConsumed(id, cells, &h.acts); err != nil {
				h.t.Fatal(err)
			}
		}
		h.flush()
		if ended {
			return got
		}
	}
}
