package notifier

import (
	"io"
	"net"
	"time"
)

// wsConn is what a conn needs of a WebSocket library. The notifier is built
// with gorilla/websocket (ws_gorilla.go); `-tags coderws` builds it with
// github.com/coder/websocket instead (ws_coder.go), so both can be measured
// with the same harness (BENCHMARKS.md, run G).
type wsConn interface {
	// NextReader waits for the next data message: mt is 1 (text) or 2
	// (binary), as in RFC 6455's opcodes. It fails when the read deadline
	// passes; after a message that was not read to its end it fails at
	// once (the connection is then being closed with a reason).
	NextReader() (mt int, r io.Reader, err error)
	// WriteMessage writes one unfragmented message, bounded by the write
	// deadline.
	WriteMessage(mt int, data []byte) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	// NetConn is the socket: its deadlines wake a blocked reader or writer.
	NetConn() net.Conn
	// sendClose writes a close frame with code and reason (at most 1 s) and
	// waits up to 500 ms for the client's answer, so unread input does not
	// turn the close into a reset that loses the frame.
	sendClose(code int, reason string)
	// Close closes the socket without a handshake.
	Close() error
}

// Each library's file also defines
//
//	(*Service).upgrade        upgrades a request (on failure it has answered)
//	isCloseError(err) bool    the client ended the connection (a close frame,
//	                          or the socket closed without one)
