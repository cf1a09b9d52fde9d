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

// newRawWriter returns a rawWriter for nc's socket, or nil if nc has none.
func newRawWriter(nc net.Conn) *rawWriter {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
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
			if errno, ok := err.(syscall.Errno); ok && errno == syscall.EINTR {
				continue
			}
			if errno, ok := err.(syscall.Errno); !ok || errno != syscall.EAGAIN {
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
