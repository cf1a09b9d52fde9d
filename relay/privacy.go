package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
)

// Private by default (STYLE.md habit 8): logs never carry client
// addresses, destinations or raw network errors (which embed addresses)
// unless the operator sets LogSensitive.

// safeErr is err for a log line: as is with LogSensitive, otherwise
// stripped of the addresses and host names net errors carry.
func (r *Relay) safeErr(err error) string {
	if err == nil {
		return ""
	}
	if r.cfg.LogSensitive {
		return err.Error()
	}
	return redact(err)
}

// redact describes err without addresses or names.
func redact(err error) string {
	var op *net.OpError
	var dns *net.DNSError
	var sys *os.SyscallError
	switch {
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, net.ErrClosed):
		return "connection closed"
	case errors.As(err, &dns):
		switch {
		case dns.IsNotFound:
			return "dns: not found"
		case dns.IsTimeout:
			return "dns: timeout"
		}
		return "dns: failed"
	case errors.As(err, &sys):
		return sys.Syscall + ": " + sys.Err.Error()
	case errors.As(err, &op):
		if op.Timeout() {
			return op.Op + ": timeout"
		}
		return op.Op + ": failed"
	}
	// Our own and the protocol core's errors carry no addresses.
	return err.Error()
}

// sensitive is a for a log line if the operator opted in, else a
// placeholder.
func (r *Relay) sensitive(a any) any {
	if r.cfg.LogSensitive {
		if ap, ok := a.(netip.Addr); ok {
			return ap.String()
		}
		return a
	}
	return "[redacted]"
}
