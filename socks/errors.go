package socks

import (
	"context"
	"errors"
	"os"
	"strconv"
	"syscall"
)

// ReplyCode is the REP field of a SOCKS5 reply (RFC 1928 section 6).
type ReplyCode byte

// SOCKS5 reply codes, RFC 1928 section 6.
const (
	ReplySucceeded           ReplyCode = 0x00
	ReplyGeneralFailure      ReplyCode = 0x01
	ReplyNotAllowed          ReplyCode = 0x02 // connection not allowed by ruleset
	ReplyNetworkUnreachable  ReplyCode = 0x03
	ReplyHostUnreachable     ReplyCode = 0x04
	ReplyConnectionRefused   ReplyCode = 0x05
	ReplyTTLExpired          ReplyCode = 0x06
	ReplyCommandNotSupported ReplyCode = 0x07
	ReplyAddressNotSupported ReplyCode = 0x08
)

// String returns the RFC 1928 name of the code.
func (c ReplyCode) String() string {
	switch c {
	case ReplySucceeded:
		return "succeeded"
	case ReplyGeneralFailure:
		return "general SOCKS server failure"
	case ReplyNotAllowed:
		return "connection not allowed by ruleset"
	case ReplyNetworkUnreachable:
		return "network unreachable"
	case ReplyHostUnreachable:
		return "host unreachable"
	case ReplyConnectionRefused:
		return "connection refused"
	case ReplyTTLExpired:
		return "TTL expired"
	case ReplyCommandNotSupported:
		return "command not supported"
	case ReplyAddressNotSupported:
		return "address type not supported"
	}
	return "reply code " + strconv.Itoa(int(c))
}

// Errors a Dialer returns (wrapped with %w as it likes) to choose the SOCKS5
// reply the application sees. ReplyCodeFor maps them.
var (
	// ErrNotAllowed: the exit's policy refuses this address or port (0x02).
	ErrNotAllowed = errors.New("socks: connection not allowed by exit policy")
	// ErrNetworkUnreachable: the exit could not reach the destination's network (0x03).
	ErrNetworkUnreachable = errors.New("socks: network unreachable")
	// ErrHostUnreachable: the exit could not reach the destination host (0x04).
	ErrHostUnreachable = errors.New("socks: host unreachable")
	// ErrDNSFailure: the exit could not resolve the hostname (0x04, as Tor does).
	ErrDNSFailure = errors.New("socks: hostname did not resolve at the exit")
	// ErrRefused: the destination refused the connection (0x05).
	ErrRefused = errors.New("socks: connection refused")
	// ErrTTLExpired: the stream or circuit timed out (0x06).
	ErrTTLExpired = errors.New("socks: TTL expired")
)

// ErrNotLoopback is returned by Listen for an address that is not loopback
// when Config.AllowNonLoopback is false (DESIGN property 8).
var ErrNotLoopback = errors.New("socks: refusing to listen on a non-loopback address (AllowNonLoopback is false)")

// replyTable is ReplyCodeFor's mapping, checked in order; first match wins.
var replyTable = []struct {
	err  error
	code ReplyCode
}{
	{ErrNotAllowed, ReplyNotAllowed},
	{ErrRefused, ReplyConnectionRefused},
	{ErrNetworkUnreachable, ReplyNetworkUnreachable},
	{ErrHostUnreachable, ReplyHostUnreachable},
	{ErrDNSFailure, ReplyHostUnreachable},
	{ErrTTLExpired, ReplyTTLExpired},
	{context.DeadlineExceeded, ReplyTTLExpired},
	{os.ErrDeadlineExceeded, ReplyTTLExpired},
	// A Dialer that dials TCP itself (tests, a direct testnet mode) gets
	// sensible codes for the kernel's errors too.
	{syscall.ECONNREFUSED, ReplyConnectionRefused},
	{syscall.ENETUNREACH, ReplyNetworkUnreachable},
	{syscall.EHOSTUNREACH, ReplyHostUnreachable},
	{syscall.ETIMEDOUT, ReplyTTLExpired},
}

// ReplyCodeFor returns the SOCKS5 reply code for a Dialer's result: 0x00
// for nil; the code of the first error in the table above that err matches
// with errors.Is; 0x06 for any other error whose Timeout() reports true;
// 0x01 (general failure) for everything else, including context.Canceled.
func ReplyCodeFor(err error) ReplyCode {
	if err == nil {
		return ReplySucceeded
	}
	for _, e := range replyTable {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return ReplyTTLExpired
	}
	return ReplyGeneralFailure
}
