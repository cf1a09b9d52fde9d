package directory

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the known-answer documents in testdata/")

// checkGolden compares got with testdata/name, or rewrites it with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading known answer (run with -update to create): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the known answer:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestDescriptorRoundTrip(t *testing.T) {
	d, priv := testDescriptor(t, 0)
	raw := signDescriptor(t, d, priv)
	got, err := ParseDescriptor(raw, testTime)
	if err != nil {
		t.Fatalf("ParseDescriptor: %v", err)
	}
	if got.Nickname != d.Nickname || !got.Identity.Equal(d.Identity) || got.LinkKey != d.LinkKey ||
		got.OnionKey != d.OnionKey || got.Address != d.Address || got.Bandwidth != d.Bandwidth ||
		got.Platform != d.Platform || !got.Published.Equal(d.Published) || !got.ExitPolicy.Equal(d.ExitPolicy) {
		t.Errorf("round trip changed the descriptor:\n got %+v\nwant %+v", got, d)
	}
	if got.ID() != d.ID() {
		t.Error("ID changed")
	}
	again := signDescriptor(t, got, priv)
	if !bytes.Equal(again, raw) {
		t.Error("re-signing the parsed descriptor gave different bytes")
	}
	checkGolden(t, "descriptor.txt", raw)
}

func TestDescriptorEveryBitFlipRejected(t *testing.T) {
	d, priv := testDescriptor(t, 0)
	raw := signDescriptor(t, d, priv)
	for i := range raw {
		for bit := 0; bit < 8; bit++ {
			b := bytes.Clone(raw)
			b[i] ^= 1 << bit
			if _, err := ParseDescriptor(b, testTime); err == nil {
				t.Fatalf("flipping bit %d of byte %d was accepted", bit, i)
			}
		}
	}
}

func TestDescriptorRejections(t *testing.T) {
	d, priv := testDescriptor(t, 0)
	raw := signDescriptor(t, d, priv)
	other := testKey("someone else")

	resign := func(body string) []byte {
		// Sign a hand-made body with the relay's real key, so only the
		// grammar can reject it.
		return []byte(body + "signature " + b64.EncodeToString(edSign(priv, contextDescriptor, []byte(body))) + "\n")
	}
	body := string(raw[:bytes.LastIndex(raw, []byte("signature "))])

	tests := []struct {
		name string
		doc  []byte
		now  time.Time
		want error
	}{
		{"valid", raw, testTime, nil},
		{"bad signature", resignWith(raw, other), testTime, ErrBadSignature},
		{"tampered bandwidth", bytes.Replace(raw, []byte("bandwidth 1000"), []byte("bandwidth 9000"), 1), testTime, ErrBadSignature},
		{"published in the future", raw, d.Published.Add(-MaxClockSkew - time.Second), ErrDescriptorFuture},
		{"stale", raw, d.Published.Add(DescriptorLifetime + time.Second), ErrDescriptorExpired},
		{"oversize", append(bytes.Clone(raw), bytes.Repeat([]byte("x"), MaxDescriptorSize)...), testTime, ErrTooLarge},
		{"duplicate keyword", resign(strings.Replace(body, "platform", "bandwidth 1000\nplatform", 1)), testTime, ErrMalformed},
		{"unknown keyword", resign(strings.Replace(body, "platform", "family x\nplatform", 1)), testTime, ErrMalformed},
		{"missing keyword", resign(strings.Replace(body, "platform veil 0.1 test\n", "", 1)), testTime, ErrMalformed},
		{"trailing junk", append(bytes.Clone(raw), "extra\n"...), testTime, ErrMalformed},
		{"no final newline", raw[:len(raw)-1], testTime, ErrMalformed},
		{"carriage return", bytes.Replace(raw, []byte("\n"), []byte("\r\n"), 1), testTime, ErrMalformed},
		{"double space", resign(strings.Replace(body, "nickname ", "nickname  ", 1)), testTime, ErrMalformed},
		{"version 2", resign(strings.Replace(body, "veil-descriptor 1", "veil-descriptor 2", 1)), testTime, ErrMalformed},
		{"leading zero", resign(strings.Replace(body, "bandwidth 1000", "bandwidth 01000", 1)), testTime, ErrInvalidField},
		{"non-canonical policy", resign(strings.Replace(body, "accept *:80\n", "accept *:80-80\n", 1)), testTime, ErrNonCanonical},
		{"non-canonical time", resign(strings.Replace(body, "T02:59:00Z", "T02:59:00+00:00", 1)), testTime, ErrInvalidField},
		{"empty", nil, testTime, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDescriptor(tc.doc, tc.now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("valid descriptor rejected: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got error %v, want %v", err, tc.want)
			}
		})
	}
}

// resignWith replaces a document's signature by one from key over the
// same body.
func resignWith(raw []byte, key []byte) []byte {
	i := bytes.LastIndex(raw, []byte("signature "))
	body := raw[:i]
	return append(bytes.Clone(body), "signature "+b64.EncodeToString(edSign(key, contextDescriptor, body))+"\n"...)
}

func TestDescriptorSignChecks(t *testing.T) {
	d, priv := testDescriptor(t, 1)
	if _, err := d.Sign(testKey("other")); err == nil {
		t.Error("signing with a key that is not the identity succeeded")
	}
	bad := *d
	bad.Nickname = "this-is-not-valid"
	if _, err := bad.Sign(priv); !errors.Is(err, ErrInvalidField) {
		t.Errorf("bad nickname: got %v", err)
	}
	bad = *d
	bad.Bandwidth = -1
	if _, err := bad.Sign(priv); !errors.Is(err, ErrInvalidField) {
		t.Errorf("negative bandwidth: got %v", err)
	}
	bad = *d
	bad.Identity = nil
	raw, err := bad.Sign(priv)
	if err != nil {
		t.Fatalf("nil identity should default to the key's: %v", err)
	}
	if got, err := ParseDescriptor(raw, testTime); err != nil || !got.Identity.Equal(d.Identity) {
		t.Errorf("nil identity: %v", err)
	}
	nilPolicy := *d
	nilPolicy.ExitPolicy = nil
	raw = signDescriptor(t, &nilPolicy, priv)
	got, err := ParseDescriptor(raw, testTime)
	if err != nil || got.ExitPolicy.String() != "reject *:*" {
		t.Errorf("nil policy should be written as reject *:*, got %v, %v", got, err)
	}
}

func TestRelayIDString(t *testing.T) {
	var id RelayID
	id[0], id[31] = 0xab, 0x01
	s := id.String()
	if s != strings.ToUpper(s) || len(s) != 64 {
		t.Fatalf("String() = %q", s)
	}
	back, err := ParseRelayID(s)
	if err != nil || back != id {
		t.Fatalf("ParseRelayID: %v", err)
	}
	if _, err := ParseRelayID(s[:63]); err == nil {
		t.Error("short ID accepted")
	}
}
