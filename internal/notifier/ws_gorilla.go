//go:build !coderws

package notifier

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

type gorillaConn struct{ *websocket.Conn }

func (s *Service) upgrade(w http.ResponseWriter, r *http.Request, subprotocol string) (wsConn, error) {
	var hdr http.Header
	if subprotocol != "" {
		hdr = http.Header{"Sec-Websocket-Protocol": {subprotocol}}
	}
	ws, err := s.upgrader.Upgrade(w, r, hdr)
	if err != nil {
		return nil, err
	}
	return gorillaConn{ws}, nil
}

func (g gorillaConn) sendClose(code int, reason string) {
	// The writer may be stuck on a client that does not read; the control
	// write then times out and the socket is closed anyway.
	_ = g.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	if tc, ok := g.NetConn().(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	_ = g.NetConn().SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.Copy(io.Discard, io.LimitReader(g.NetConn(), 1<<20))
}

// isCloseError: gorilla reports a socket closed without a close frame as
// a CloseError with code 1006, too.
func isCloseError(err error) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce)
}
