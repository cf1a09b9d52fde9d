package circuit

import (
	"bufio"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/veilnet/veil/crypto"
)

// Tests that keep docs/spec/circuit.md honest: its machine-readable
// Constants table, the per-hop size table of §4.1 and the worked sizes of
// §8 are compared with the code. They read the markdown relative to this
// package's directory, which is where `go test` runs.

var specPath = filepath.Join("..", "docs", "spec", "circuit.md")

// specSection returns the lines of the section that starts with the
// heading line exactly equal to heading, up to the next heading of the
// same or a higher level.
func specSection(t *testing.T, heading string) []string {
	t.Helper()
	f, err := os.Open(specPath)
	if err != nil {
		t.Fatalf("reading the spec: %v", err)
	}
	defer f.Close()
	level := strings.IndexByte(heading, ' ') // number of '#'
	var out []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t")
		if in && strings.HasPrefix(line, "#") {
			l := strings.IndexByte(line, ' ')
			if l > 0 && l <= level && strings.Trim(line[:l], "#") == "" {
				break
			}
		}
		if line == heading {
			in = true
			continue
		}
		if in {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !in {
		t.Fatalf("%s has no heading %q", specPath, heading)
	}
	return out
}

// tableRows returns the cells of every markdown table row in lines whose
// header row's first cell is firstHeader, without the header and the
// separator rows. Backticks around cells are removed.
func tableRows(lines []string, firstHeader string) [][]string {
	var rows [][]string
	in := false
	for _, line := range lines {
		if !strings.HasPrefix(line, "|") {
			in = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		switch {
		case !in && cells[0] == firstHeader:
			in = true
		case in && strings.HasPrefix(cells[0], "---"):
		case in:
			rows = append(rows, cells)
		}
	}
	return rows
}

func specInt(s string) (int64, error) {
	return strconv.ParseInt(strings.ReplaceAll(s, ",", ""), 0, 64)
}

// specConstants are the constants the Constants table must list, by their
// Go names.
var specConstants = map[string]int64{
	"CellSize":             CellSize,
	"HeaderSize":           HeaderSize,
	"PayloadSize":          PayloadSize,
	"CmdPadding":           int64(CmdPadding),
	"CmdCreate":            int64(CmdCreate),
	"CmdCreated":           int64(CmdCreated),
	"CmdRelay":             int64(CmdRelay),
	"CmdDestroy":           int64(CmdDestroy),
	"CircIDHighBit":        CircIDHighBit,
	"DestroyNone":          int64(DestroyNone),
	"DestroyProtocol":      int64(DestroyProtocol),
	"DestroyInternal":      int64(DestroyInternal),
	"DestroyRequested":     int64(DestroyRequested),
	"DestroyConnectFailed": int64(DestroyConnectFailed),
	"DestroyResourceLimit": int64(DestroyResourceLimit),
	"DestroyFinished":      int64(DestroyFinished),
	"HandshakeNK":          int64(HandshakeNK),
	"HandshakeHybrid":      int64(HandshakeHybrid),
	"HandshakeMsg1Size":    HandshakeMsg1Size,
	"HandshakeMsg2Size":    HandshakeMsg2Size,
	"KeyIDSize":            KeyIDSize,
	"HybridMsg1Size":       HybridMsg1Size,
	"HybridMsg2Size":       HybridMsg2Size,
	"KEMPublicKeySize":     crypto.KEMPublicKeySize,
	"KEMCiphertextSize":    crypto.KEMCiphertextSize,
	"KEMSharedKeySize":     crypto.KEMSharedKeySize,
	"KEMSeedSize":          crypto.KEMSeedSize,
	"OnionKeyFileSize":     crypto.OnionKeyFileSize,
	"MaxHandshakeSize":     MaxHandshakeSize,
	"MaxFragmentedSize":    MaxFragmentedSize,
	"RelayMore":            int64(RelayMore),
	"TagSize":              TagSize,
	"LayerOverhead":        LayerOverhead,
	"MaxHops":              MaxHops,
	"FlagForward":          int64(FlagForward),
	"FlagLocal":            int64(FlagLocal),
	"RelayHeaderSize":      RelayHeaderSize,
	"RelayBegin":           int64(RelayBegin),
	"RelayData":            int64(RelayData),
	"RelayEnd":             int64(RelayEnd),
	"RelayConnected":       int64(RelayConnected),
	"RelaySendme":          int64(RelaySendme),
	"RelayExtend":          int64(RelayExtend),
	"RelayExtended":        int64(RelayExtended),
	"RelayDrop":            int64(RelayDrop),
	"RelayXoff":            int64(RelayXoff),
	"RelayXon":             int64(RelayXon),
	"RelayResolve":         int64(RelayResolve),
	"RelayResolved":        int64(RelayResolved),
	"RelayFin":             int64(RelayFin),
	"EndMisc":              int64(EndMisc),
	"EndResolveFailed":     int64(EndResolveFailed),
	"EndConnectRefused":    int64(EndConnectRefused),
	"EndExitPolicy":        int64(EndExitPolicy),
	"EndDestroy":           int64(EndDestroy),
	"EndDone":              int64(EndDone),
	"EndTimeout":           int64(EndTimeout),
	"EndNoRoute":           int64(EndNoRoute),
	"EndResourceLimit":     int64(EndResourceLimit),
	"EndProtocol":          int64(EndProtocol),
	"MaxHostLen":           MaxHostLen,
	"MaxResolved":          MaxResolved,
	"MaxPendingResolves":   MaxPendingResolves,
	"MaxStreamsPerCircuit": MaxStreamsPerCircuit,
	"SendmeInc":            SendmeInc,
	"CwndInit":             CwndInit,
	"CwndMin":              CwndMin,
	"MaxCwnd":              MaxCwnd,
	"VegasAlpha":           VegasAlpha,
	"VegasBeta":            VegasBeta,
	"VegasGamma":           VegasGamma,
	"VegasDelta":           VegasDelta,
	"XoffCells":            XoffCells,
	"XonCells":             XonCells,
	"FrameHeaderSize":      FrameHeaderSize,
	"LinkMsg1Size":         LinkMsg1Size,
	"LinkMsg2Size":         LinkMsg2Size,
	"LinkMsg3Size":         LinkMsg3Size,
	"MaxCellsPerFrame":     MaxCellsPerFrame,
	"MaxFrameSize":         MaxFrameSize,
	"MaxFramedSize":        MaxFramedSize,
	"RekeyFrames":          RekeyFrames,
}

// TestSpecConstants: every row of circuit.md's Constants table names a
// constant of the code and gives its value, and every constant above has
// a row.
func TestSpecConstants(t *testing.T) {
	rows := tableRows(specSection(t, "## Constants"), "name")
	if len(rows) == 0 {
		t.Fatal("the Constants section has no table")
	}
	seen := make(map[string]bool)
	for _, r := range rows {
		if len(r) < 2 {
			t.Errorf("row %q has no value", r)
			continue
		}
		name := r[0]
		want, ok := specConstants[name]
		if !ok {
			t.Errorf("the spec lists %s, which this test does not know: add it to specConstants", name)
			continue
		}
		if seen[name] {
			t.Errorf("the spec lists %s twice", name)
		}
		seen[name] = true
		got, err := specInt(r[1])
		if err != nil {
			t.Errorf("%s: value %q is not a number", name, r[1])
			continue
		}
		if got != want {
			t.Errorf("%s: the spec says %d, the code says %d", name, got, want)
		}
	}
	for name := range specConstants {
		if !seen[name] {
			t.Errorf("the spec's Constants table does not list %s", name)
		}
	}
}

// TestSpecHopTable: the per-hop table of §4.1 is SealedWidth, BodySize,
// MaxDataSize and the forward trailing zeros for every position.
func TestSpecHopTable(t *testing.T) {
	rows := tableRows(specSection(t, "### 4.1 Sizes"), "p")
	seen := make(map[int64]bool)
	for _, r := range rows {
		if len(r) != 5 {
			t.Errorf("row %q: want 5 columns", r)
			continue
		}
		var v [5]int64
		for i := range v {
			n, err := specInt(r[i])
			if err != nil {
				t.Fatalf("row %q: %q is not a number", r, r[i])
			}
			v[i] = n
		}
		p := int(v[0])
		want := [5]int64{v[0], int64(SealedWidth(p)), int64(BodySize(p)), int64(MaxDataSize(p)), int64(LayerOverhead * (p - 1))}
		if v != want {
			t.Errorf("hop %d: the spec says %v, the code says %v", p, v, want)
		}
		seen[v[0]] = true
	}
	for p := int64(1); p <= MaxHops; p++ {
		if !seen[p] {
			t.Errorf("the §4.1 table has no row for hop %d", p)
		}
	}
}

// specNet moves cells between a client and in-memory relays (no links),
// counting the cells that reach the client.
type specNet struct {
	t        *testing.T
	client   *ClientCircuit
	relays   []*testRelay
	rcs      []*RelayCircuit
	toClient int
}

func (n *specNet) forward(hop int, c Cell) error {
	var ra RelayActions
	if err := n.rcs[hop].HandleForward(&c.Payload, &ra); err != nil {
		return err
	}
	return n.after(hop, &ra)
}

func (n *specNet) backward(hop int, c Cell) error {
	if hop < 0 {
		n.toClient++
		var ca ClientActions
		return n.client.HandleBackward(&c.Payload, &ca)
	}
	var ra RelayActions
	if err := n.rcs[hop].HandleBackward(&c.Payload, &ra); err != nil {
		return err
	}
	return n.after(hop, &ra)
}

func (n *specNet) after(hop int, ra *RelayActions) error {
	toPrev := append([]Cell(nil), ra.ToPrev...)
	toNext := append([]Cell(nil), ra.ToNext...)
	ext := ra.Extend
	for _, c := range toPrev {
		if err := n.backward(hop-1, c); err != nil {
			return err
		}
	}
	if ext != nil {
		payloads, err := CreatePayloads(ext.HType, ext.Handshake)
		if err != nil {
			return err
		}
		rc, created, err := n.relays[hop+1].accept(payloads)
		if err != nil {
			return err
		}
		n.rcs = append(n.rcs, rc)
		var ra2 RelayActions
		if err := n.rcs[hop].HandleCreated(created, &ra2); err != nil {
			return err
		}
		return n.after(hop, &ra2)
	}
	for _, c := range toNext {
		if err := n.forward(hop+1, c); err != nil {
			return err
		}
	}
	return nil
}

// buildCounted builds a circuit of hops hops with the real state machines
// and returns the cells the client sent and received.
func buildCounted(t *testing.T, hops int) (sent, received int) {
	n := &specNet{t: t, client: NewClientCircuit(nil)}
	for i := range hops {
		n.relays = append(n.relays, newTestRelay(t, i+1))
	}
	payloads, err := n.client.Create(&seqRand{label: "spec-client"}, n.relays[0].spec)
	if err != nil {
		t.Fatal(err)
	}
	sent += len(payloads)
	rc, created, err := n.relays[0].accept(payloads)
	if err != nil {
		t.Fatal(err)
	}
	n.rcs = append(n.rcs, rc)
	received++
	if err := n.client.HandleCreated(created); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < hops; i++ {
		var ca ClientActions
		if err := n.client.Extend(&seqRand{label: "spec-client"}, n.relays[i].spec, &ca); err != nil {
			t.Fatal(err)
		}
		cells := append([]Cell(nil), ca.ToLink...)
		sent += len(cells)
		for _, c := range cells {
			if err := n.forward(0, c); err != nil {
				t.Fatalf("extending to hop %d: %v", i+1, err)
			}
		}
		if n.client.Hops() != i+1 {
			t.Fatalf("hop %d not built", i+1)
		}
	}
	return sent, received + n.toClient
}

// fragments is how many relay messages m takes at a hop whose messages
// carry maxData bytes of data.
func fragments(t *testing.T, m RelayMsg, maxData int) int {
	n := 0
	if err := emitFragmented(func(RelayMsg) error { n++; return nil }, m, maxData); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSpecWorkedSizes: every row of the worked-sizes table of §8 is what
// the code produces.
func TestSpecWorkedSizes(t *testing.T) {
	var relayID [32]byte
	(&seqRand{label: "relay-identity"}).Read(relayID[:])
	onion, err := crypto.GenerateOnionKey(&seqRand{label: "onion-key"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseOnionPublic(onion.X25519.Public, onion.KEMPublic[:])
	if err != nil {
		t.Fatal(err)
	}
	_, hmsg1, err := NewHybridClientHandshake(&seqRand{label: "client"}, relayID, pub, 1)
	if err != nil {
		t.Fatal(err)
	}
	hmsg2, _, _, err := RespondHybridHandshake(&seqRand{label: "relay"}, relayID, []*crypto.OnionKey{onion}, hmsg1)
	if err != nil {
		t.Fatal(err)
	}
	_, nmsg1, err := NewClientHandshake(&seqRand{label: "client"}, relayID, onion.X25519.Public, 1)
	if err != nil {
		t.Fatal(err)
	}
	createCells := func(ht HandshakeType, msg []byte) int64 {
		p, err := CreatePayloads(ht, msg)
		if err != nil {
			t.Fatal(err)
		}
		return int64(len(p))
	}
	extend := func(ht HandshakeType, msg []byte, addr string) []byte {
		req := ExtendRequest{Addr: netip.MustParseAddrPort(addr), HType: ht, Handshake: msg}
		b, err := req.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ext4 := extend(HandshakeHybrid, hmsg1, "203.0.113.7:9001")
	resolved := make([]ResolvedAddr, MaxResolved)
	for i := range resolved {
		resolved[i] = ResolvedAddr{Addr: netip.MustParseAddr("2001:db8::1"), TTL: 60}
	}
	biggestResolved, err := EncodeResolved(0, resolved)
	if err != nil {
		t.Fatal(err)
	}
	sent, received := buildCounted(t, 3)

	want := map[string]int64{
		"cell on a link":                                  CellSize,
		"stream bytes per cell at hop 3":                  int64(MaxDataSize(3)),
		"hybrid message 1":                                int64(len(hmsg1)),
		"hybrid message 2":                                int64(len(hmsg2)),
		"NK message 1":                                    int64(len(nmsg1)),
		"CREATE cells for hybrid message 1":               createCells(HandshakeHybrid, hmsg1),
		"CREATE cells for NK message 1":                   createCells(HandshakeNK, nmsg1),
		"hybrid EXTEND data, IPv4":                        int64(len(ext4)),
		"hybrid EXTEND data, IPv6":                        int64(len(extend(HandshakeHybrid, hmsg1, "[2001:db8::7]:9001"))),
		"NK EXTEND data, IPv4":                            int64(len(extend(HandshakeNK, nmsg1, "203.0.113.7:9001"))),
		"NK EXTEND data, IPv6":                            int64(len(extend(HandshakeNK, nmsg1, "[2001:db8::7]:9001"))),
		"EXTEND cells to hop 1":                           int64(fragments(t, RelayMsg{Cmd: RelayExtend, Data: ext4}, MaxDataSize(1))),
		"EXTEND cells to hop 2":                           int64(fragments(t, RelayMsg{Cmd: RelayExtend, Data: ext4}, MaxDataSize(2))),
		"EXTENDED data":                                   int64(2 + len(hmsg2)),
		"cells the client sends to build 3 hops":          int64(sent),
		"cells the client receives while building 3 hops": int64(received),
		"SENDME data":                                     TagSize,
		"largest RESOLVED data":                           int64(len(biggestResolved)),
		"stream bytes in flight at CwndInit, 3 hops":      int64(CwndInit * MaxDataSize(3)),
		"stream bytes in flight at MaxCwnd, 3 hops":       int64(MaxCwnd * MaxDataSize(3)),
		"stream bytes in a full link frame, 3 hops":       int64(MaxCellsPerFrame * MaxDataSize(3)),
		"bytes of a full link frame on the wire":          MaxFramedSize,
	}
	rows := tableRows(specSection(t, "## 8. Worked example: a 3-hop circuit"), "quantity")
	seen := make(map[string]bool)
	for _, r := range rows {
		if len(r) < 2 {
			t.Errorf("row %q has no value", r)
			continue
		}
		w, ok := want[r[0]]
		if !ok {
			t.Errorf("the spec's worked sizes list %q, which this test does not compute", r[0])
			continue
		}
		seen[r[0]] = true
		got, err := specInt(r[1])
		if err != nil {
			t.Errorf("%s: %q is not a number", r[0], r[1])
			continue
		}
		if got != w {
			t.Errorf("%s: the spec says %d, the code gives %d", r[0], got, w)
		}
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("the spec's worked sizes do not list %q", k)
		}
	}
}
