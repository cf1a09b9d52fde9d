package directory

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
)

func TestNetworkRoundTrip(t *testing.T) {
	net, _ := testNetwork(3)
	enc := net.Encode()
	got, err := ParseNetwork(enc)
	if err != nil {
		t.Fatalf("ParseNetwork: %v\n%s", err, enc)
	}
	if got.Name != net.Name || len(got.Authorities) != 3 {
		t.Fatalf("round trip changed the network: %+v", got)
	}
	for i, a := range got.Authorities {
		w := net.Authorities[i]
		if a.Name != w.Name || a.Address != w.Address || !a.Identity.Equal(w.Identity) {
			t.Errorf("authority %d changed: %+v", i, a)
		}
	}
	if !bytes.Equal(got.Encode(), enc) {
		t.Error("Encode is not stable")
	}
	if got.Quorum() != 2 {
		t.Errorf("Quorum() = %d, want 2", got.Quorum())
	}
	if got.Index(net.Authorities[2].Identity) != 2 || got.Index(testKey("x").Public().(ed25519.PublicKey)) != -1 {
		t.Error("Index is wrong")
	}
	checkGolden(t, "network.toml", enc)
}

func TestNetworkRejections(t *testing.T) {
	net, _ := testNetwork(2)
	good := string(net.Encode())
	id0 := b64.EncodeToString(net.Authorities[0].Identity)
	tests := map[string]string{
		"unknown key":        strings.Replace(good, "name = \"auth0\"", "name = \"auth0\"\nport = 3", 1),
		"unknown table":      good + "\n[extra]\nx = 1\n",
		"duplicate key":      strings.Replace(good, "name = \"auth0\"", "name = \"auth0\"\nname = \"again\"", 1),
		"duplicate name":     strings.Replace(good, "auth1", "auth0", 1),
		"duplicate identity": strings.Replace(good, b64.EncodeToString(net.Authorities[1].Identity), id0, 1),
		"duplicate address":  strings.Replace(good, "127.0.1.1:7000", "127.0.0.1:7000", 1),
		"short identity":     strings.Replace(good, id0, id0[:40], 1),
		"hex identity":       strings.Replace(good, id0, strings.Repeat("ab", 32), 1),
		"no port":            strings.Replace(good, "127.0.0.1:7000", "127.0.0.1", 1),
		"port zero":          strings.Replace(good, "127.0.0.1:7000", "127.0.0.1:0", 1),
		"bad host":           strings.Replace(good, "127.0.0.1:7000", "http://x:7000", 1),
		"bad network name":   strings.Replace(good, "\"testnet\"", "\"test net\"", 1),
		"no authorities":     "name = \"testnet\"\n",
		"wrong type":         strings.Replace(good, "name = \"testnet\"", "name = 5", 1),
		"not toml":           "{}",
		"too large":          good + "#" + strings.Repeat("x", MaxNetworkSize),
	}
	for name, doc := range tests {
		if _, err := ParseNetwork([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseNetwork([]byte(tests["too large"])); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
	ok := map[string]string{
		"hostname": strings.Replace(good, "127.0.0.1:7000", "dir.example.org:7000", 1),
		"ipv6":     strings.Replace(good, "127.0.0.1:7000", "[::1]:7000", 1),
	}
	for name, doc := range ok {
		if _, err := ParseNetwork([]byte(doc)); err != nil {
			t.Errorf("%s: rejected: %v", name, err)
		}
	}
}
