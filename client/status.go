package client

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/veilnet/veil/directory"
)

// Status is a snapshot of the client for people: guards and circuits by
// relay nickname. It never holds a destination, an isolation key or a
// client address, so it may be logged at Info and written to disk.
type Status struct {
	Time         time.Time       `json:"time"`
	Ready        bool            `json:"ready"`
	ConsensusAge time.Duration   `json:"consensus_age_ns"`
	Relays       int             `json:"relays"`
	BuildTimeout time.Duration   `json:"build_timeout_ns"`
	Guards       []GuardStatus   `json:"guards"`
	Circuits     []CircuitStatus `json:"circuits"`
}

// GuardStatus is one sampled guard.
type GuardStatus struct {
	Nickname string `json:"nickname"`
	ID       string `json:"id"` // hex of the identity key
	Primary  bool   `json:"primary"`
	// State is "up" (connected recently or not tried), "failing" (waiting
	// to retry) or "unlisted" (not a usable guard in the consensus).
	State string `json:"state"`
}

// CircuitStatus is one open circuit.
type CircuitStatus struct {
	Path    []string      `json:"path"` // nicknames, guard first
	Age     time.Duration `json:"age_ns"`
	Clean   bool          `json:"clean"` // no stream has used it yet
	Retired bool          `json:"retired"`
	Streams int           `json:"streams"`
}

// Status returns a snapshot of the client.
func (c *Client) Status() Status {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Time: now, Ready: c.ready, BuildTimeout: c.cbt.Timeout()}
	if c.consensus != nil {
		st.ConsensusAge = now.Sub(c.consensus.ValidAfter).Round(time.Second)
		st.Relays = len(c.consensus.Relays)
	}
	primary := map[directory.RelayID]bool{}
	for _, id := range c.guards.PrimaryGuards() {
		primary[id] = true
	}
	for _, e := range c.guards.Entries {
		state := "up"
		switch {
		case !e.UnlistedSince.IsZero():
			state = "unlisted"
		case e.Failing(now):
			state = "failing"
		}
		st.Guards = append(st.Guards, GuardStatus{Nickname: e.Nickname, ID: fmt.Sprintf("%x", e.ID[:]),
			Primary: primary[e.ID], State: state})
	}
	for _, circ := range c.circs {
		cs := CircuitStatus{Age: now.Sub(circ.built).Round(time.Second), Clean: circ.firstUse.IsZero(), Retired: circ.retired}
		for _, r := range circ.path {
			cs.Path = append(cs.Path, r.Nickname)
		}
		circ.mu.Lock()
		cs.Streams = circ.cc.StreamCount()
		circ.mu.Unlock()
		st.Circuits = append(st.Circuits, cs)
	}
	return st
}

// String renders the status in a few lines for people.
func (st Status) String() string {
	var b strings.Builder
	ready := "bootstrapping"
	if st.Ready {
		ready = "ready"
	}
	fmt.Fprintf(&b, "%s; consensus of %d relays, %v old; circuit build timeout %v\n", ready, st.Relays, st.ConsensusAge, st.BuildTimeout)
	for _, g := range st.Guards {
		role := "guard"
		if g.Primary {
			role = "primary guard"
		}
		fmt.Fprintf(&b, "  %-13s %-20s %-8s %s\n", role, g.Nickname, g.State, g.ID)
	}
	for _, cs := range st.Circuits {
		use := "in use"
		switch {
		case cs.Clean:
			use = "clean"
		case cs.Retired:
			use = "retired"
		}
		fmt.Fprintf(&b, "  circuit %-40s %-7s %d streams, %v old\n", strings.Join(cs.Path, " > "), use, cs.Streams, cs.Age)
	}
	return b.String()
}

// logStatus logs one status line at Info and writes the status file.
func (c *Client) logStatus() {
	st := c.Status()
	var guards, circs []string
	for _, g := range st.Guards {
		guards = append(guards, g.Nickname+"("+g.State+")")
	}
	for _, cs := range st.Circuits {
		circs = append(circs, strings.Join(cs.Path, ">"))
	}
	c.log.Info("status", "guards", strings.Join(guards, " "), "circuits", len(st.Circuits),
		"paths", strings.Join(circs, " "), "build_timeout", st.BuildTimeout)
	c.writeStatusFile(st)
}

// writeStatusFile writes st to the state directory, if there is one.
func (c *Client) writeStatusFile(st Status) {
	if c.cfg.StateDir == "" {
		return
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := writeFileAtomic(c.cfg.StateDir, StatusFileName, append(b, '\n')); err != nil {
		c.log.Debug("could not write the status file", "err", err)
	}
}

// ReadStatus reads the status file a running client keeps in its state
// directory (rewritten every 10 seconds).
func ReadStatus(stateDir string) (*Status, error) {
	b, err := readBounded(filepath.Join(stateDir, StatusFileName))
	if err != nil {
		return nil, fmt.Errorf("client: reading status: %w", err)
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("client: reading status: %w", err)
	}
	return &st, nil
}

// BuildTimes returns the recent completed circuit build times the build
// timeout learns from (at most MaxBuildObservations, oldest first).
func (c *Client) BuildTimes() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cbt.Completed()
}
