package client

import (
	"context"
	"net"
	"net/http"
	"time"
)

// HTTPOptions configures HTTPTransport and HTTPClient.
type HTTPOptions struct {
	// Isolation is the isolation key of every stream the transport opens:
	// transports with different keys never share a circuit (nor do they
	// share circuits with SOCKS clients, whose keys are built differently).
	Isolation string
	// Timeout is the http.Client's Timeout (HTTPClient only); zero means
	// none.
	Timeout time.Duration
}

// HTTPTransport returns an *http.Transport whose connections are streams
// through veil. Its DialContext hands "host:port" to DialStream unresolved,
// and its Proxy is nil, so no hostname is ever resolved locally and no
// environment proxy (HTTP_PROXY...) is used. TLS for https:// runs inside
// the stream, end to end with the server; HTTP/2 is attempted.
//
// The transport keeps idle connections as any http.Transport does (a
// connection is a stream on a circuit); call CloseIdleConnections when done.
func (c *Client) HTTPTransport(opts HTTPOptions) *http.Transport {
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.DialIsolated(ctx, opts.Isolation, network, addr)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		ExpectContinueTimeout: time.Second,
	}
}

// HTTPClient returns an *http.Client on HTTPTransport(opts). Redirects are
// followed as usual, through the same transport.
func (c *Client) HTTPClient(opts HTTPOptions) *http.Client {
	return &http.Client{Transport: c.HTTPTransport(opts), Timeout: opts.Timeout}
}

// isolationPrefix keeps Go API keys apart from SOCKS keys (ULEN UNAME PLEN
// PASSWD, docs/socks.md): the only SOCKS key that starts with two zero
// bytes is exactly "\x00\x00" (empty username and password), and every
// prefixed key is longer.
const isolationPrefix = "\x00\x00go:"

// DialIsolated is Dial with an isolation key: streams with different keys
// never share a circuit. key "" shares circuits with Dial.
func (c *Client) DialIsolated(ctx context.Context, key, network, addr string) (net.Conn, error) {
	host, port, err := splitTarget(network, addr)
	if err != nil {
		return nil, err
	}
	if key != "" {
		key = isolationPrefix + key
	}
	return c.DialStream(ctx, key, host, port)
}
