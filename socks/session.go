package socks

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	socks5 "github.com/armon/go-socks5"
)

// Protocol constants, RFC 1928 and RFC 1929.
const (
	socksVersion     = 0x05
	methodNoAuth     = 0x00
	methodUserPass   = 0x02
	methodNoneUsable = 0xFF
	userPassVersion  = 0x01
	userPassSuccess  = 0x00

	atypIPv4 = 0x01
	// replySize is a reply with an IPv4 BND.ADDR: VER REP RSV ATYP + 4 + 2.
	replySize = 4 + 4 + 2
	// readBufSize bounds what is read ahead of the parser; the largest
	// handshake message (RFC 1929: 3 + 255 + 255 bytes) fits.
	readBufSize = 1024
)

var (
	errBadVersion  = errors.New("socks: not a SOCKS5 greeting")
	errNoMethod    = errors.New("socks: client offers neither no-auth nor username/password")
	errBadUserPass = errors.New("socks: bad username/password subnegotiation version")
	errResolved    = errors.New("socks: hostname arrived with a locally resolved address; refusing")
	errBadHost     = errors.New("socks: invalid destination hostname")
	errNoRequest   = errors.New("socks: dial without a recorded request")
	errNilStream   = errors.New("socks: Dialer returned neither a stream nor an error")
	errAborted     = errors.New("socks: server closing")
	// errHijacked is what our Dial hook returns to go-socks5 after taking
	// over a successful stream; go-socks5 then stops and we relay.
	errHijacked = errors.New("socks: stream taken over by the relay")
)

// negotiator is all of go-socks5 that veil uses: it runs the SOCKS5
// negotiation on one connection (greeting, authentication, request, command
// dispatch) and calls back into the session.
type negotiator interface {
	ServeConn(net.Conn) error
}

var _ negotiator = (*socks5.Server)(nil)

// session is one client connection. Its fields other than mu, closed and
// stream are used only by the goroutine running run, and then by the two
// relay goroutines it starts after the handshake is over.
type session struct {
	srv *Server
	raw net.Conn
	cc  *clientConn

	dialCtx   context.Context  // the Serve context, parent of DialStream's
	isolation string           // set by the authenticator; "" for no-auth
	dest      *socks5.AddrSpec // the request's destination, recorded by Rewrite
	connected bool             // the success reply went out: relay
	relayWG   sync.WaitGroup   // the two relay goroutines

	mu     sync.Mutex // guards closed and stream
	closed bool
	stream net.Conn // set once DialStream succeeded

	greetBuf [2 + 255]byte     // VER NMETHODS METHODS
	upBuf    [2 + 255 + 1]byte // RFC 1929 VER ULEN UNAME PLEN
	passBuf  [255]byte         // RFC 1929 PASSWD
	replyBuf [replySize]byte
}

func newSession(s *Server, raw net.Conn) *session {
	ss := &session{srv: s, raw: raw}
	ss.cc = &clientConn{Conn: raw, br: bufio.NewReaderSize(raw, readBufSize)}
	return ss
}

// close closes the client connection and the stream; it is idempotent and
// safe from any goroutine.
func (ss *session) close() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return
	}
	ss.closed = true
	ss.raw.Close()
	if ss.stream != nil {
		ss.stream.Close()
	}
}

// setStream records a successful stream; false if the session was closed
// meanwhile (the caller then closes the stream).
func (ss *session) setStream(c net.Conn) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return false
	}
	ss.stream = c
	return true
}

// run performs the handshake and, if a CONNECT succeeded, the relay.
func (ss *session) run(ctx context.Context) {
	ss.dialCtx = ctx
	hs := ss.srv.cfg.HandshakeTimeout
	if err := ss.raw.SetDeadline(time.Now().Add(hs)); err != nil {
		return
	}
	method, err := ss.greet()
	if err != nil {
		ss.srv.log.Debug("socks: handshake failed", "err", err)
		return
	}
	err = ss.negotiator(method).ServeConn(ss.cc)
	if !ss.connected {
		ss.srv.log.Debug("socks: request ended without a stream", "err", err)
		return
	}
	ss.relay()
}

// greet reads the client's greeting and chooses the method: username/password
// whenever offered (it carries the isolation key), else no-auth, else it
// answers 0xFF (RFC 1928 section 3).
func (ss *session) greet() (byte, error) {
	b := ss.greetBuf[:2]
	if _, err := io.ReadFull(ss.cc.br, b); err != nil {
		return 0, err
	}
	if b[0] != socksVersion {
		return 0, errBadVersion
	}
	methods := ss.greetBuf[2 : 2+int(b[1])]
	if _, err := io.ReadFull(ss.cc.br, methods); err != nil {
		return 0, err
	}
	var noAuth, userPass bool
	for _, m := range methods {
		noAuth = noAuth || m == methodNoAuth
		userPass = userPass || m == methodUserPass
	}
	switch {
	case userPass:
		return methodUserPass, nil
	case noAuth:
		return methodNoAuth, nil
	}
	ss.raw.Write([]byte{socksVersion, methodNoneUsable})
	return 0, errNoMethod
}

// negotiator builds a go-socks5 server for this connection only: its hooks
// are closures over the session, which go-socks5's context chain cannot
// carry (it never passes the client conn to Dial). The greeting go-socks5
// reads is replaced by one that offers only the chosen method, so its
// client-order method choice cannot override ours.
func (ss *session) negotiator(method byte) negotiator {
	ss.cc.pending = []byte{socksVersion, 1, method}
	var auth socks5.Authenticator = socks5.NoAuthAuthenticator{}
	if method == methodUserPass {
		auth = userPassAuth{ss}
	}
	srv, err := socks5.New(&socks5.Config{
		AuthMethods: []socks5.Authenticator{auth},
		Resolver:    noResolver{},
		Rewriter:    recorder{ss},
		Rules:       socks5.PermitAll(), // BIND and UDP ASSOCIATE then answer 0x07
		Logger:      ss.srv.s5,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			return ss.dial()
		},
	})
	if err != nil { // socks5.New cannot fail for this config
		panic(err)
	}
	return srv
}

// noResolver is go-socks5's NameResolver. It never resolves: DNS happens at
// the exit. Because the Resolver is set, go-socks5 never installs its
// DNSResolver (net.ResolveIPAddr); because Dial is set, it never calls net.Dial.
type noResolver struct{}

var _ socks5.NameResolver = noResolver{}

func (noResolver) Resolve(ctx context.Context, _ string) (context.Context, net.IP, error) {
	return ctx, nil, nil
}

// recorder is go-socks5's AddressRewriter; it rewrites nothing and records
// the destination for Dial, which otherwise only sees a "host:port" string.
type recorder struct{ ss *session }

var _ socks5.AddressRewriter = recorder{}

func (r recorder) Rewrite(ctx context.Context, req *socks5.Request) (context.Context, *socks5.AddrSpec) {
	r.ss.dest = req.DestAddr
	return ctx, req.DestAddr
}

// userPassAuth is RFC 1929 for stream isolation: any username and password
// are accepted and both become the isolation key.
type userPassAuth struct{ ss *session }

var _ socks5.Authenticator = userPassAuth{}

func (userPassAuth) GetCode() uint8 { return methodUserPass }

func (a userPassAuth) Authenticate(r io.Reader, w io.Writer) (*socks5.AuthContext, error) {
	if _, err := w.Write([]byte{socksVersion, methodUserPass}); err != nil {
		return nil, err
	}
	// VER ULEN UNAME PLEN PASSWD
	b := a.ss.upBuf[:2]
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	if b[0] != userPassVersion {
		return nil, errBadUserPass
	}
	ulen := int(b[1])
	b = a.ss.upBuf[2 : 2+ulen+1] // UNAME and PLEN
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	user, plen := b[:ulen], int(b[ulen])
	pass := a.ss.passBuf[:plen]
	if _, err := io.ReadFull(r, pass); err != nil {
		return nil, err
	}
	a.ss.isolation = isolationKey(user, pass)
	if _, err := w.Write([]byte{userPassVersion, userPassSuccess}); err != nil {
		return nil, err
	}
	return &socks5.AuthContext{Method: methodUserPass}, nil // credentials stay out of go-socks5
}

// isolationKey encodes (user, pass) injectively: ULEN UNAME PLEN PASSWD, the
// RFC 1929 fields themselves. It is never "" (no-auth's key), even for two
// empty strings.
func isolationKey(user, pass []byte) string {
	k := make([]byte, 0, 2+len(user)+len(pass))
	k = append(k, byte(len(user)))
	k = append(k, user...)
	k = append(k, byte(len(pass)))
	k = append(k, pass...)
	return string(k)
}

// target returns the destination exactly as the client sent it.
func (ss *session) target() (string, uint16, error) {
	d := ss.dest
	if d == nil {
		return "", 0, errNoRequest
	}
	port := uint16(d.Port) // two bytes on the wire
	if d.FQDN != "" {
		if d.IP != nil { // something resolved the name: fail closed
			return "", 0, errResolved
		}
		if !validHostname(d.FQDN) {
			return "", 0, errBadHost
		}
		return d.FQDN, port, nil
	}
	switch len(d.IP) { // the raw DST.ADDR bytes; IPv4-mapped IPv6 stays IPv6
	case 4:
		return netip.AddrFrom4([4]byte(d.IP)).String(), port, nil
	case 16:
		return netip.AddrFrom16([16]byte(d.IP)).String(), port, nil
	}
	return "", 0, errBadHost // a zero-length name: no FQDN, no IP
}

// validHostname rejects names no exit could resolve and that would only make
// trouble on the way (control bytes, spaces): 1..255 bytes, none <= 0x20 or 0x7F.
func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= 0x20 || c == 0x7F {
			return false
		}
	}
	return true
}

// dial is go-socks5's Dial hook. It opens the stream and writes the reply
// itself, with the code chosen by ReplyCodeFor; it never hands a conn back
// to go-socks5 (so go-socks5 neither relays nor type-asserts LocalAddr).
func (ss *session) dial() (net.Conn, error) {
	host, port, err := ss.target()
	if errors.Is(err, errBadHost) {
		ss.fail(ReplyHostUnreachable)
		return nil, err
	}
	if err != nil { // cannot happen unless go-socks5 or our hooks change
		ss.srv.log.Error("socks: refusing a request", "err", err)
		ss.fail(ReplyGeneralFailure)
		return nil, err
	}
	if err := ss.dialCtx.Err(); err != nil {
		ss.fail(ReplyGeneralFailure)
		return nil, errAborted
	}
	ctx, cancel := context.WithTimeout(ss.dialCtx, ss.srv.cfg.ConnectTimeout)
	stream, err := ss.srv.cfg.Dialer.DialStream(ctx, ss.isolation, host, port)
	cancel()
	if err == nil && stream == nil {
		err = errNilStream
	}
	if err != nil {
		code := ReplyCodeFor(err)
		ss.srv.log.Debug("socks: stream failed", "reply", code, "err", err)
		ss.fail(code)
		return nil, err
	}
	if !ss.setStream(stream) {
		stream.Close()
		return nil, errAborted
	}
	ss.cc.replied = true // whatever go-socks5 writes next is swallowed
	if err := ss.reply(ReplySucceeded); err != nil {
		return nil, err // session.close closes the stream
	}
	if err := ss.raw.SetDeadline(time.Time{}); err != nil { // the handshake is over
		return nil, err
	}
	ss.connected = true
	return nil, errHijacked
}

// fail sends a failure reply; the one go-socks5 sends next is swallowed.
func (ss *session) fail(code ReplyCode) {
	ss.reply(code)
	ss.cc.replied = true
}

// reply writes VER REP RSV ATYP=IPv4 0.0.0.0 0: BND.ADDR/PORT reveal nothing.
// It gets its own deadline, since DialStream may have outlived the handshake's.
func (ss *session) reply(code ReplyCode) error {
	if err := ss.raw.SetDeadline(time.Now().Add(ss.srv.cfg.HandshakeTimeout)); err != nil {
		return err
	}
	ss.replyBuf = [replySize]byte{socksVersion, byte(code), 0, atypIPv4}
	_, err := ss.raw.Write(ss.replyBuf[:])
	return err
}

// relay copies both ways until both directions have ended. A clean EOF in
// one direction is passed on as a half-close (CloseWrite) and the other
// direction keeps going; an error in either closes both sides.
func (ss *session) relay() {
	ss.relayWG.Add(2)
	go ss.pipe(ss.stream, ss.cc)
	go ss.pipe(ss.raw, ss.stream)
	ss.relayWG.Wait()
}

func (ss *session) pipe(dst net.Conn, src io.Reader) {
	defer ss.relayWG.Done()
	defer ss.srv.recoverPanic(ss)
	if _, err := io.Copy(dst, src); err != nil {
		ss.close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() != nil {
			ss.close()
		}
	}
}

// clientConn is the client connection as go-socks5 sees it.
//
// Until replied it returns the replacement greeting (pending) and then at
// most one byte per Read, so that go-socks5's own bufio.Reader never holds
// bytes past the request: whatever the client sent after it (optimistic
// data) stays in br for the relay. Once replied (our reply to the CONNECT
// went out), Writes are swallowed (go-socks5's own reply must not follow
// ours) and Reads return everything available.
// Close is a no-op: the session owns the connection.
type clientConn struct {
	net.Conn
	br      *bufio.Reader
	pending []byte
	replied bool
}

func (c *clientConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(c.pending) > 0 {
		n := 1
		if c.replied {
			n = copy(p, c.pending)
		} else {
			p[0] = c.pending[0]
		}
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.replied {
		return c.br.Read(p)
	}
	b, err := c.br.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	return 1, nil
}

func (c *clientConn) Write(p []byte) (int, error) {
	if c.replied {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *clientConn) Close() error { return nil }
