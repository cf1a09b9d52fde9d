// Package socks is veil's SOCKS5 front end (RFC 1928, RFC 1929): the local
// proxy that curl, browsers and other applications connect to. It accepts
// CONNECT requests and hands every destination, unresolved, to a Dialer that
// opens a stream through the anonymity network.
//
// The protocol engine is github.com/armon/go-socks5, kept behind the
// unexported negotiator interface and wrapped where it falls short (see
// docs/socks.md for the full list):
//
//   - the greeting is read here, so username/password is chosen whenever
//     the client offers it (go-socks5 picks in the client's order);
//   - username and password are read by our own authenticator and become
//     the stream-isolation key (go-socks5's drops the password);
//   - the Resolver never resolves, and fails closed if a name ever arrives
//     at Dial with an address attached: no local DNS, ever;
//   - the CONNECT reply, its code, the handshake deadline and the relay
//     with half-close are done here, not by go-socks5, so reply codes come
//     from typed errors instead of error text, every goroutine has an
//     owner, and go-socks5 never sees the stream (its LocalAddr panic,
//     issue #50, cannot trigger);
//   - its logger is discarded, and each connection runs under recover().
//
// Wire formats handled in this package (RFC 1928 section 3, RFC 1929 section 2,
// RFC 1928 section 6):
//
//	greeting (client):  +-----+----------+----------------+
//	                    | VER | NMETHODS | METHODS        |
//	                    |  5  |    1     | 1..255 bytes   |
//	                    +-----+----------+----------------+
//	method (server):    +-----+--------+
//	                    | VER | METHOD |  METHOD 0x02 if offered, else 0x00,
//	                    |  5  |   1    |  else 0xFF and close
//	                    +-----+--------+
//	user/pass (client): +-----+------+----------+------+----------+
//	                    | 1   | ULEN | UNAME    | PLEN | PASSWD   |
//	                    +-----+------+----------+------+----------+
//	user/pass (server): +-----+--------+
//	                    | 1   | 0x00   |  any credentials are accepted
//	                    +-----+--------+
//	reply (server):     +-----+-----+-----+------+----------+----------+
//	                    | VER | REP | RSV | ATYP | BND.ADDR | BND.PORT |
//	                    |  5  |  1  |  0  |  1   | 0.0.0.0  |    0     |
//	                    +-----+-----+-----+------+----------+----------+
//
// The request (VER CMD RSV ATYP DST.ADDR DST.PORT) is parsed by go-socks5.
package socks
