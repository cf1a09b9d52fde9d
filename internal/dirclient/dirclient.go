// Package dirclient is the HTTP client of veil's directory protocol
// (docs/spec/directory.md, "HTTP interface"). Relays use it to upload
// descriptors, clients and relays to fetch the consensus, and authorities
// to exchange votes and detached signatures.
//
// The transport is plain HTTP: every document is signed, and the caller
// verifies what it fetches (directory.VerifyConsensus and friends), so
// nothing here is trusted. What this package guarantees is boundedness:
// every request has a timeout, every response body a size limit, no
// redirect is followed and no proxy from the environment is used.
package dirclient

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/veilnet/veil/directory"
)

// HTTP paths of the directory protocol.
const (
	PathDescriptor = "/veil/dir/v1/descriptor" // POST a signed descriptor
	PathConsensus  = "/veil/dir/v1/consensus"  // GET the latest consensus
	PathVote       = "/veil/dir/v1/vote"       // POST a vote; GET PathVote/{valid-after}/{authority}
	PathSignature  = "/veil/dir/v1/signature"  // POST a detached signature; GET PathSignature/{valid-after}/{authority}
)

// Timeouts.
const (
	// DefaultTimeout bounds one whole request, body included.
	DefaultTimeout = 30 * time.Second
	// DialTimeout bounds connecting to a directory server.
	DialTimeout = 10 * time.Second
	// ResponseHeaderTimeout bounds waiting for a response's headers.
	ResponseHeaderTimeout = 20 * time.Second
)

// maxErrorBody bounds how much of an error response is read and quoted.
const maxErrorBody = 256

// Errors.
var (
	ErrBadAddress = errors.New("dirclient: invalid directory address")
	ErrTooLarge   = errors.New("dirclient: response exceeds the size limit")
	ErrNotFound   = errors.New("dirclient: document not found")
	ErrRejected   = errors.New("dirclient: request rejected by the directory server")
	ErrRequest    = errors.New("dirclient: request failed")
)

// Client talks to directory servers. The zero value is not usable; use
// New. A Client is safe for concurrent use.
type Client struct {
	http *http.Client
}

// New returns a Client with its own connection pool. dial, if non-nil,
// replaces the TCP dialer (the testnet and the simulator use it).
func New(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *Client {
	if dial == nil {
		dial = (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	tr := &http.Transport{
		Proxy:                  nil, // never an environment proxy
		DialContext:            dial,
		MaxIdleConns:           32,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        30 * time.Second,
		ResponseHeaderTimeout:  ResponseHeaderTimeout,
		MaxResponseHeaderBytes: 16 << 10,
		DisableCompression:     true,
	}
	return &Client{
		http: &http.Client{
			Transport: tr,
			Timeout:   DefaultTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
}

// CloseIdleConnections closes pooled connections; call it when done.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

var defaultClient = New(nil)

// UploadDescriptor posts a signed descriptor to the authority at addr
// ("host:port"). It returns nil only if the authority accepted it.
func UploadDescriptor(ctx context.Context, authorityAddr string, signedDesc []byte) error {
	return defaultClient.UploadDescriptor(ctx, authorityAddr, signedDesc)
}

// FetchConsensus fetches the latest consensus from the directory server
// at addr, unverified; the caller must check it with
// directory.VerifyConsensus.
func FetchConsensus(ctx context.Context, addr string) ([]byte, error) {
	return defaultClient.FetchConsensus(ctx, addr)
}

// FetchVerifiedConsensus tries the authorities of network in order until one
// serves a consensus that directory.VerifyConsensus accepts at now(). It
// returns the verified consensus and its bytes, or the last error.
func FetchVerifiedConsensus(ctx context.Context, network *directory.Network, now func() time.Time) (*directory.Consensus, []byte, error) {
	return defaultClient.FetchVerifiedConsensus(ctx, network, now)
}

// UploadDescriptor posts a signed descriptor to the authority at addr.
func (c *Client) UploadDescriptor(ctx context.Context, addr string, signedDesc []byte) error {
	return c.post(ctx, addr, PathDescriptor, signedDesc)
}

// FetchConsensus fetches the latest consensus from addr, unverified.
func (c *Client) FetchConsensus(ctx context.Context, addr string) ([]byte, error) {
	return c.get(ctx, addr, PathConsensus, directory.MaxConsensusSize)
}

// FetchVerifiedConsensus is the method form of FetchVerifiedConsensus.
func (c *Client) FetchVerifiedConsensus(ctx context.Context, network *directory.Network, now func() time.Time) (*directory.Consensus, []byte, error) {
	err := error(ErrNotFound)
	for _, a := range network.Authorities {
		raw, ferr := c.FetchConsensus(ctx, a.Address)
		if ferr != nil {
			err = fmt.Errorf("authority %s: %w", a.Name, ferr)
			continue
		}
		cons, verr := directory.VerifyConsensus(raw, network, now())
		if verr != nil {
			err = fmt.Errorf("authority %s: %w", a.Name, verr)
			continue
		}
		return cons, raw, nil
	}
	return nil, nil, err
}

// PostVote sends a signed vote to the authority at addr.
func (c *Client) PostVote(ctx context.Context, addr string, vote []byte) error {
	return c.post(ctx, addr, PathVote, vote)
}

// FetchVote asks the authority at addr for the vote of the authority with
// identity key id for the round starting at va.
func (c *Client) FetchVote(ctx context.Context, addr string, va time.Time, id ed25519.PublicKey) ([]byte, error) {
	return c.get(ctx, addr, RoundPath(PathVote, va, id), directory.MaxVoteSize)
}

// PostSignature sends a detached consensus signature to addr.
func (c *Client) PostSignature(ctx context.Context, addr string, sig []byte) error {
	return c.post(ctx, addr, PathSignature, sig)
}

// FetchSignature asks the authority at addr for the detached signature of
// the authority with identity key id for round va.
func (c *Client) FetchSignature(ctx context.Context, addr string, va time.Time, id ed25519.PublicKey) ([]byte, error) {
	return c.get(ctx, addr, RoundPath(PathSignature, va, id), directory.MaxSignatureSize)
}

// RoundPath returns base/{unix seconds of va}/{uppercase hex of id}.
func RoundPath(base string, va time.Time, id ed25519.PublicKey) string {
	var rid directory.RelayID
	copy(rid[:], id)
	return base + "/" + strconv.FormatInt(va.Unix(), 10) + "/" + rid.String()
}

// endpoint builds the URL of path on addr, which must be "host:port".
func endpoint(addr, path string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" || strings.ContainsAny(addr, "/?#@ \\") {
		return "", ErrBadAddress
	}
	u := url.URL{Scheme: "http", Host: addr, Path: path}
	return u.String(), nil
}

func (c *Client) post(ctx context.Context, addr, path string, body []byte) error {
	u, err := endpoint(addr, path)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRequest, err)
	}
	req.Header.Set("Content-Type", "text/plain; charset=us-ascii")
	resp, err := c.http.Do(req)
	if err != nil {
		return requestError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	return nil
}

func (c *Client) get(ctx context.Context, addr, path string, limit int64) ([]byte, error) {
	u, err := endpoint(addr, path)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, requestError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	if resp.ContentLength > limit {
		return nil, ErrTooLarge
	}
	var body io.Reader = resp.Body
	switch resp.Header.Get("Content-Encoding") {
	case "":
	case "gzip":
		// The limit applies to the decompressed bytes: a small
		// compressed body cannot expand beyond it.
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return nil, requestError(err)
		}
		defer zr.Close()
		body = zr
	default:
		return nil, fmt.Errorf("%w: unsupported content encoding", ErrRequest)
	}
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, requestError(err)
	}
	if int64(len(b)) > limit {
		return nil, ErrTooLarge
	}
	return b, nil
}

// requestError wraps a transport error without the URL.
func requestError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("%w: %v", ErrRequest, err)
}

// statusError turns a non-200 response into an error quoting at most
// maxErrorBody printable bytes of the server's explanation.
func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	msg := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, string(b))
	base := ErrRejected
	if resp.StatusCode == http.StatusNotFound {
		base = ErrNotFound
	}
	return fmt.Errorf("%w: HTTP %d: %s", base, resp.StatusCode, strings.TrimSpace(msg))
}
