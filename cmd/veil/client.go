package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/veilnet/veil/client"
	"github.com/veilnet/veil/socks"
)

func runClient(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	networkPath := fs.String("network", "", "network file")
	socksAddr := fs.String("socks", "127.0.0.1:9050", "SOCKS5 listen address")
	allowPublic := fs.Bool("socks-allow-non-loopback", false, "allow a non-loopback SOCKS address (anyone who can reach it can use your client)")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	network, err := loadNetwork(*networkPath)
	if err != nil {
		return err
	}
	log := newLogger(*verbose)
	c, err := client.New(client.Config{Network: network, Logger: log})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Bootstrap(ctx); err != nil {
		return err
	}
	srv, err := socks.Listen(socks.Config{Addr: *socksAddr, AllowNonLoopback: *allowPublic, Dialer: socks.ClientDialer(c), Logger: log})
	if err != nil {
		return err
	}
	fmt.Printf("ready: SOCKS5 proxy on %s\n", srv.Addr())
	return srv.Serve(ctx)
}
