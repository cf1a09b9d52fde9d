//go:build !unix

package linkio

import "net"

// rawWriter is unavailable here: TryWriteBatch keeps everything for
// WriteBatch.
type rawWriter struct{}

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) writeNow([]byte) (int, error) { return 0, nil }

// rawReader is unavailable here: the link reader keeps its buffer.
type rawReader struct{}

func newRawReader(net.Conn) *rawReader { return nil }

func (*rawReader) wait() error { return nil }
