//go:build unix

package notifier

import (
	"errors"
	"net"
	"syscall"
)

// tryWrite makes one non-blocking write of b to rc and returns how much
// of it went out; a full socket buffer is not an error, just a short
// count.
func tryWrite(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil && !errors.Is(err, syscall.EAGAIN) {
				werr = err
			}
			if err != nil || m <= 0 {
				break
			}
		}
		return true // never wait for the socket to be writable
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// rawConn returns conn's raw connection for tryWrite, nil when it is not
// a plain TCP or Unix socket: a TLS connection, or a listener's wrapper
// whose Write does more than write (counting, limiting), which inline
// writes would go around.
func rawConn(conn net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := conn.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
