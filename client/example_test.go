package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/sim"
)

// Example starts a client in-process and fetches a page through the
// network with an isolated *http.Client. Here the network is a private
// testnet on loopback; against a real network, load its network file with
// directory.ParseNetwork instead. No hostname is resolved locally: the
// transport hands "host:port" to the exit.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A private network: 3 authorities and 6 relays on loopback.
	tn, err := sim.StartTestnet(ctx, sim.TestnetConfig{VotingInterval: 4 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer tn.Close()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello through veil")
	}))
	defer web.Close()

	// The client: keep its guards in a state directory across restarts.
	state, err := os.MkdirTemp("", "veil-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(state)
	c, err := client.New(client.Config{Network: tn.Network, StateDir: state})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Bootstrap(ctx); err != nil {
		log.Fatal(err)
	}

	// An *http.Client whose streams never share a circuit with another
	// isolation key's.
	hc := c.HTTPClient(client.HTTPOptions{Isolation: "example", Timeout: time.Minute})
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(web.URL)
	if err != nil {
		log.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	// Plain streams work too: c.Dial(ctx, "tcp", "example.com:443").
	fmt.Println(resp.Status, string(body))
	// Output: 200 OK hello through veil
}
