package circuit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/veilnet/veil/crypto"
)

// Known-answer vectors for the circuit handshakes (classical NK and the
// hybrid), the keys they derive and the layered cell crypto, in
// testdata/vectors.json. They were generated once with
//
//	go test ./circuit -run TestVectors -update
//
// from deterministic inputs, and every run checks that the code still
// produces them byte for byte. A second implementation can check itself
// against the same file: every input is in it.

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// seqRand yields the bytes SHA-256(label || counter) || ...: reproducible
// and documented, so other implementations can feed the same randomness.
type seqRand struct {
	label string
	n     uint32
	buf   []byte
}

func (r *seqRand) Read(p []byte) (int, error) {
	for i := range p {
		if len(r.buf) == 0 {
			h := sha256.Sum256(append([]byte(r.label), byte(r.n>>24), byte(r.n>>16), byte(r.n>>8), byte(r.n)))
			r.n++
			r.buf = h[:]
		}
		p[i] = r.buf[0]
		r.buf = r.buf[1:]
	}
	return len(p), nil
}

type handshakeVector struct {
	Type         string `json:"type"`
	Note         string `json:"note"`
	RelayID      string `json:"relay_identity"`
	OnionKeyFile string `json:"onion_key_material"` // X25519 private || ML-KEM seed
	ClientRandom string `json:"client_random_label"`
	RelayRandom  string `json:"relay_random_label"`
	Position     int    `json:"position"`
	Msg1         string `json:"msg1"`
	Msg2         string `json:"msg2"`
	Forward      string `json:"forward_key"`
	Backward     string `json:"backward_key"`
}

type layerVector struct {
	Note      string `json:"note"`
	Forward   string `json:"forward_key"`
	Backward  string `json:"backward_key"`
	Position  int    `json:"position"`
	Counter   uint64 `json:"counter"`
	Flag      byte   `json:"flag"`
	Plaintext string `json:"plaintext_payload"`
	Sealed    string `json:"sealed_payload"`
	Direction string `json:"direction"`
}

type vectorFile struct {
	Handshakes []handshakeVector `json:"handshakes"`
	Layers     []layerVector     `json:"layers"`
}

func makeVectors(t *testing.T) vectorFile {
	var vf vectorFile
	var relayID [32]byte
	(&seqRand{label: "relay-identity"}).Read(relayID[:])
	raw := make([]byte, crypto.OnionKeyFileSize)
	(&seqRand{label: "onion-key"}).Read(raw)
	onion, err := crypto.GenerateOnionKey(&seqRand{label: "onion-key"})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []HandshakeType{HandshakeNK, HandshakeHybrid} {
		cr := &seqRand{label: "client"}
		rr := &seqRand{label: "relay"}
		var (
			h    *ClientHandshake
			msg1 []byte
			msg2 []byte
			rk   *HopKeys
		)
		switch typ {
		case HandshakeNK:
			h, msg1, err = NewClientHandshake(cr, relayID, onion.X25519.Public, 2)
			if err == nil {
				msg2, rk, _, err = RespondHandshake(rr, relayID, &onion.X25519, msg1)
			}
		case HandshakeHybrid:
			var pub *OnionPublic
			pub, err = ParseOnionPublic(onion.X25519.Public, onion.KEMPublic[:])
			if err == nil {
				h, msg1, err = NewHybridClientHandshake(cr, relayID, pub, 2)
			}
			if err == nil {
				msg2, rk, _, err = RespondHybridHandshake(rr, relayID, []*crypto.OnionKey{onion}, msg1)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		ck, err := h.Finish(msg2)
		if err != nil {
			t.Fatal(err)
		}
		if *ck != *rk {
			t.Fatal("the two sides derived different keys")
		}
		name := map[HandshakeType]string{HandshakeNK: "nk", HandshakeHybrid: "hybrid-nkpsk2-mlkem768"}[typ]
		vf.Handshakes = append(vf.Handshakes, handshakeVector{
			Type: name, Note: "randomness: SHA-256(label || 32-bit big-endian counter) blocks, concatenated",
			RelayID: hex.EncodeToString(relayID[:]), OnionKeyFile: hex.EncodeToString(raw),
			ClientRandom: "client", RelayRandom: "relay", Position: 2,
			Msg1: hex.EncodeToString(msg1), Msg2: hex.EncodeToString(msg2),
			Forward: hex.EncodeToString(ck.Forward[:]), Backward: hex.EncodeToString(ck.Backward[:]),
		})
	}
	// Layers: one forward seal at the client for hop 2 (LOCAL) and one
	// backward seal at hop 3 (FORWARD), each the 6th cell (counter 5).
	keys := HopKeys{}
	(&seqRand{label: "layer-forward"}).Read(keys.Forward[:])
	(&seqRand{label: "layer-backward"}).Read(keys.Backward[:])
	for _, tc := range []struct {
		dir  string
		pos  int
		flag byte
	}{{"forward", 2, FlagLocal}, {"backward", 3, FlagForward}} {
		h, err := newHopLayer(&keys, tc.pos)
		if err != nil {
			t.Fatal(err)
		}
		var p [PayloadSize]byte
		(&seqRand{label: "payload"}).Read(p[:BodySize(tc.pos)])
		plain := p
		if tc.dir == "forward" {
			h.forward.counter = 5
			err = h.sealForward(&p, tc.flag)
		} else {
			h.backward.counter = 5
			err = h.sealBackward(&p, tc.flag)
		}
		if err != nil {
			t.Fatal(err)
		}
		vf.Layers = append(vf.Layers, layerVector{
			Note:    "AES-256-GCM, nonce = 4 zero bytes || counter (64-bit big-endian); body || flag sealed in place, tag after it, zeros to 509 bytes",
			Forward: hex.EncodeToString(keys.Forward[:]), Backward: hex.EncodeToString(keys.Backward[:]),
			Position: tc.pos, Counter: 5, Flag: tc.flag, Direction: tc.dir,
			Plaintext: hex.EncodeToString(plain[:]), Sealed: hex.EncodeToString(p[:]),
		})
	}
	return vf
}

func TestVectors(t *testing.T) {
	got, err := json.MarshalIndent(makeVectors(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "vectors.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("the code no longer produces testdata/vectors.json")
	}
	// The stored vectors also open: a relay given msg1 from the file
	// recovers the position and keys the file lists.
	var vf vectorFile
	if err := json.Unmarshal(want, &vf); err != nil {
		t.Fatal(err)
	}
	for _, v := range vf.Handshakes {
		raw, _ := hex.DecodeString(v.OnionKeyFile)
		onion, err := crypto.GenerateOnionKey(&fixedBytes{raw})
		if err != nil {
			t.Fatal(err)
		}
		var id [32]byte
		b, _ := hex.DecodeString(v.RelayID)
		copy(id[:], b)
		msg1, _ := hex.DecodeString(v.Msg1)
		ht := map[string]HandshakeType{"nk": HandshakeNK, "hybrid-nkpsk2-mlkem768": HandshakeHybrid}[v.Type]
		_, created, err := AcceptCreate(&seqRand{label: v.RelayRandom}, nil, id, []*crypto.OnionKey{onion}, ht, msg1)
		if err != nil {
			t.Fatalf("%s: relay rejects the stored message 1: %v", v.Type, err)
		}
		m2, _ := DecodeCreated(created[:])
		if hex.EncodeToString(m2) != v.Msg2 {
			t.Fatalf("%s: relay's message 2 differs from the stored one", v.Type)
		}
	}
}

type fixedBytes struct{ b []byte }

func (f *fixedBytes) Read(p []byte) (int, error) {
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}
