package world

import (
	"bytes"
	"fmt"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/directory/dirtest"
	"github.com/veilnet/veil/sim/report"
	"github.com/veilnet/veil/sim/simnet"
)

// The directory: the authorities of directory/dirtest (the real sans-IO
// directory.Authority: descriptors, reachability, flags, votes, the
// consensus rule, signatures) run in the simulation's virtual time, on
// dirtest's schedule of ten-minute rounds. What is modelled: the
// authorities' messages to one another arrive at once (a round's vote,
// signature and publication steps run together at its vote time, and the
// result is published at valid-after); a reachability test succeeds iff
// the relay's process is up; every client receives each new consensus
// at valid-after and checks it with directory.VerifyConsensus (no
// directory traffic on the simulated links yet).
//
// Two rounds run before the clock starts, so the network begins with a
// fresh consensus listing every relay.

// bootLead is how long before Epoch the directory starts.
const bootLead = 12 * time.Minute

type dirState struct {
	n *dirtest.Net
}

// descriptorTime is when relays published their first descriptors.
func descriptorTime() time.Time { return simnet.Epoch.Add(-bootLead - 3*time.Minute) }

func (w *World) bootDirectory() error {
	n := dirtest.New(w.sc.Directory.Authorities, 0, dirtest.Options{})
	for _, r := range w.relays {
		n.Relays = append(n.Relays, r.dt)
	}
	w.dir = &dirState{n: n}
	n.Now = simnet.Epoch.Add(-bootLead)
	for range 2 {
		n.Upload()
		va, docs := n.Round()
		if err := w.publish(va, docs); err != nil {
			return err
		}
	}
	if w.cons == nil {
		return fmt.Errorf("world: the authorities published no consensus at boot")
	}
	w.scheduleRound()
	return nil
}

// scheduleRound arms the next round's vote.
func (w *World) scheduleRound() {
	va := dirtest.Schedule.NextRound(w.sim.Now())
	w.sim.At(dirtest.Schedule.VoteTime(va), func() {
		n := w.dir.n
		n.Now = w.sim.Now()
		n.Upload()
		va, docs := n.Round()
		w.sim.At(va, func() {
			if err := w.publish(va, docs); err != nil {
				w.m.Error("directory: " + err.Error())
			}
			w.scheduleRound()
		})
	})
}

// publish checks round va's documents as a client would and installs the
// consensus. Online authorities publish the same bytes; a round in which
// none could publish leaves clients with the consensus they have.
func (w *World) publish(va time.Time, docs [][]byte) error {
	var doc []byte
	for _, d := range docs {
		if d == nil {
			continue
		}
		if doc != nil && !bytes.Equal(doc, d) {
			return fmt.Errorf("authorities published different documents")
		}
		doc = d
	}
	at := va.Sub(simnet.Epoch).Seconds()
	if doc == nil {
		w.m.Error("directory: no consensus published")
		w.event("round %s: no consensus", va.Format("15:04"))
		return nil
	}
	c, err := directory.VerifyConsensus(doc, w.dir.n.Network, va)
	if err != nil {
		return err
	}
	sc, err := directory.ParseConsensus(doc)
	if err != nil {
		return err
	}
	running := 0
	for i := range c.Relays {
		if c.Relays[i].Flags.Has(directory.FlagRunning) {
			running++
		}
	}
	w.m.Consensus = append(w.m.Consensus, consensusRound(at, running, len(sc.Signatures)))
	w.cons = c
	for _, cl := range w.clients {
		cl.newConsensus()
	}
	return nil
}

func consensusRound(at float64, running, sigs int) report.ConsensusRound {
	return report.ConsensusRound{AtSeconds: at, Running: running, Signatures: sigs}
}
