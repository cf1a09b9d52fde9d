//go:build !unix

package linkio

import "net"

// rawWriter is unavailable here: TryWriteBatch keeps everything for
// WriteBatch.
type rawWriter struct{}

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) writeNow([]byte) (int, error) { return 0, nil }
