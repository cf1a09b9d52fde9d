package sim

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/internal/dirclient"
)

// TestClientReportsWrongClock: a client whose clock is hours ahead of the
// authorities refuses their (authentic) consensus and says clearly that
// its clock is wrong, instead of retrying forever.
func TestClientReportsWrongClock(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tn, err := StartTestnet(ctx, TestnetConfig{VotingInterval: 4 * time.Second, Relays: 3, Exits: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	// A correct client first, so a consensus exists when the skewed one asks.
	good, err := client.New(client.Config{Network: tn.Network, PreemptiveCircuits: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if err := good.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	skewed, err := client.New(client.Config{Network: tn.Network, Now: func() time.Time { return time.Now().Add(3 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer skewed.Close()
	err = skewed.Bootstrap(ctx)
	var skew *dirclient.ClockSkewError
	if !errors.As(err, &skew) || !strings.Contains(err.Error(), "clock") || !strings.Contains(err.Error(), "ahead") {
		t.Fatalf("skewed client bootstrap: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("bootstrap ran until the test's deadline instead of reporting the clock")
	}
}
