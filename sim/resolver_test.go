package sim

import (
	"context"
	"errors"
	"testing"
)

func TestLoopbackResolver(t *testing.T) {
	for _, h := range []string{"localhost", "LOCALHOST", "localhost.", "a.b.localhost"} {
		addrs, _, err := LoopbackResolver{}.Resolve(context.Background(), h)
		if err != nil || len(addrs) != 2 || !addrs[0].IsLoopback() {
			t.Errorf("%s: %v %v", h, addrs, err)
		}
	}
	for _, h := range []string{"example.com", "localhost.example.com", "notlocalhost"} {
		if _, _, err := (LoopbackResolver{}).Resolve(context.Background(), h); !errors.Is(err, ErrNotLocal) {
			t.Errorf("%s resolved: %v", h, err)
		}
	}
}
