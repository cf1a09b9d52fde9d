//go:build unix

package linkio

import (
	"net"
	"syscall"
)

// rawWriter writes to a socket without ever waiting (Go keeps its sockets
// non-blocking). One belongs to each Conn and is used under its wmu; its
// callback is bound once so that a write allocates nothing.
type rawWriter struct {
	raw syscall.RawConn
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// socketOf returns nc's file descriptor access, or nil if it has none
// (net.Pipe, test doubles).
func socketOf(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// newRawWriter returns a rawWriter for nc's socket, or nil if nc has none.
func newRawWriter(nc net.Conn) *rawWriter {
	raw := socketOf(nc)
	if raw == nil {
		return nil
	}
	w := &rawWriter{raw: raw}
	w.fn = w.write
	return w
}

// writeNow writes as much of buf as the socket takes at once and returns
// how much that was.
func (w *rawWriter) writeNow(buf []byte) (int, error) {
	w.buf, w.n, w.err = buf, 0, nil
	err := w.raw.Write(w.fn)
	n, werr := w.n, w.err
	w.buf, w.err = nil, nil
	if err != nil {
		return n, err
	}
	return n, werr
}

func (w *rawWriter) write(fd uintptr) bool {
	for w.n < len(w.buf) {
		m, err := syscall.Write(int(fd), w.buf[w.n:])
		if m > 0 {
			w.n += m
		}
		if err != nil {
			errno, _ := err.(syscall.Errno)
			if errno == syscall.EINTR {
				continue
			}
			if errno != syscall.EAGAIN {
				w.err = err
			}
			break
		}
		if m <= 0 {
			break
		}
	}
	return true // done: never wait for the socket
}

// rawReader waits for a socket to become readable without reading from
// it, so that the link reader needs no buffer while its link is idle
// (read.go). It belongs to the link's reader goroutine.
type rawReader struct {
	raw  syscall.RawConn
	peek [1]byte
	fn   func(fd uintptr) bool
}

// newRawReader returns a rawReader for nc's socket, or nil if nc has none.
func newRawReader(nc net.Conn) *rawReader {
	raw := socketOf(nc)
	if raw == nil {
		return nil
	}
	r := &rawReader{raw: raw}
	r.fn = r.ready
	return r
}

// wait returns once the socket has bytes, has reached end of file or has
// failed (the next Read reports which), or with the error that closed it.
func (r *rawReader) wait() error { return r.raw.Read(r.fn) }

func (r *rawReader) ready(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), r.peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	errno, _ := err.(syscall.Errno)
	return errno != syscall.EAGAIN // false: Go waits for readability and asks again
}
