package authority

import (
	"context"
	"crypto/rand"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/veilnet/veil/circuit"
	"github.com/veilnet/veil/crypto"
	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/linkio"
)

func TestKeysInitCertifyLoad(t *testing.T) {
	for _, hybrid := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "auth")
		now := time.Now()
		id, s, err := InitKeys(dir, hybrid, rand.Reader, now, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := InitKeys(dir, hybrid, rand.Reader, now, time.Hour); err != ErrKeysExist {
			t.Errorf("second init: %v", err)
		}
		net := &directory.Network{Name: "n", Authorities: []directory.AuthorityInfo{{
			Name: "a", Address: "127.0.0.1:7000", Identity: id.Public(), IdentityPQ: id.PublicPQ()}}}
		loaded, err := LoadSigner(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := loaded.Cert.Check(net, now); err != nil || !loaded.Key.Public().Equal(s.Key.Public()) {
			t.Fatalf("loaded signer: %v", err)
		}
		// Offline certification: the identity lives elsewhere.
		offline := filepath.Join(t.TempDir(), "offline")
		if err := crypto.EnsureKeyDir(offline); err != nil {
			t.Fatal(err)
		}
		idBack, err := LoadIdentity(dir)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := Certify(idBack, dir, rand.Reader, now.Add(time.Hour), 48*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		again, err := LoadSigner(dir)
		if err != nil || !again.Key.Public().Equal(s2.Key.Public()) || again.Key.Public().Equal(s.Key.Public()) {
			t.Fatalf("certify did not install a new signing key: %v", err)
		}
		if _, err := again.Cert.Check(net, now.Add(47*time.Hour)); err != nil {
			t.Errorf("new certificate: %v", err)
		}
		if _, err := again.Cert.Check(net, now.Add(50*time.Hour)); err != directory.ErrCertExpired {
			t.Errorf("expired certificate: %v", err)
		}
	}
}

func TestLinkTester(t *testing.T) {
	key, err := crypto.GenerateStaticKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				if c, err := linkio.Accept(nc, &key, rand.Reader); err == nil {
					_ = c.ReadLoop(func(*circuit.Cell) error { return nil })
					c.Close()
				}
			}()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	test := LinkTester()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := test(ctx, directory.ReachabilityTarget{Address: addr, LinkKey: key.Public}); err != nil {
		t.Fatalf("reachable relay: %v", err)
	}
	var wrong [32]byte
	wrong[0] = 9
	if err := test(ctx, directory.ReachabilityTarget{Address: addr, LinkKey: wrong}); err == nil {
		t.Fatal("a relay without the descriptor's link key passed")
	}
	closed := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 1)
	if err := test(ctx, directory.ReachabilityTarget{Address: closed, LinkKey: key.Public}); err == nil {
		t.Fatal("a closed port passed")
	}
}
