//go:build !unix

package notifier

import (
	"errors"
	"net"
	"syscall"
)

// rawConn returns nil: without a non-blocking write of our own every
// frame goes through the writer goroutine.
func rawConn(net.Conn) syscall.RawConn { return nil }

func tryWrite(syscall.RawConn, []byte) (int, error) {
	return 0, errors.New("notifier: no inline writes on this platform")
}
