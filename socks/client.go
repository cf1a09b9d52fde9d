package socks

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/veilnet/veil/circuit"
)

// ClientDialer adapts veil's client (in practice a *client.Client, which
// satisfies Dialer) to the front end: a stream error that carries the exit's
// END reason — an error in the chain with an EndReason() circuit.EndReason
// method, found with errors.As — is wrapped with the sentinel that
// ReplyCodeFor maps to the matching SOCKS5 reply:
//
//	EndExitPolicy      ErrNotAllowed          0x02
//	EndNoRoute         ErrHostUnreachable     0x04
//	EndResolveFailed   ErrDNSFailure          0x04
//	EndConnectRefused  ErrRefused             0x05
//	EndTimeout         ErrTTLExpired          0x06
//
// Other errors pass through unchanged (0x01 unless they wrap a sentinel or a
// timeout). Package socks takes the client through the Dialer interface, and
// does not import package client, so that its tests run on fakes.
func ClientDialer(d Dialer) Dialer { return endReasonDialer{d} }

type endReasonDialer struct{ d Dialer }

var _ Dialer = endReasonDialer{}

func (e endReasonDialer) DialStream(ctx context.Context, isolation, host string, port uint16) (net.Conn, error) {
	conn, err := e.d.DialStream(ctx, isolation, host, port)
	if err != nil {
		return nil, mapEndReason(err)
	}
	return conn, nil
}

// endReasoner is implemented by errors that report a circuit END reason.
type endReasoner interface {
	EndReason() circuit.EndReason
}

func mapEndReason(err error) error {
	var er endReasoner
	if !errors.As(err, &er) {
		return err
	}
	var kind error
	switch er.EndReason() {
	case circuit.EndExitPolicy:
		kind = ErrNotAllowed
	case circuit.EndConnectRefused:
		kind = ErrRefused
	case circuit.EndResolveFailed:
		kind = ErrDNSFailure
	case circuit.EndTimeout:
		kind = ErrTTLExpired
	case circuit.EndNoRoute:
		kind = ErrHostUnreachable
	default:
		return err
	}
	return fmt.Errorf("%w: %w", kind, err)
}
