//go:build coderws

package notifier

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// coderConn adapts a coder/websocket connection to wsConn.
//
// coder/websocket bounds reads and writes with a context; when that
// context ends it closes the socket without a close frame, so a deadline
// could never carry "idle timeout" or "slow consumer" to the client. The
// adapter therefore uses context.Background() (coder then arms no timer) and
// puts the deadlines on the socket itself, which it takes from the
// hijacked connection, exactly as the gorilla path does.
type coderConn struct {
	ws *websocket.Conn
	nc net.Conn
	// msg wraps the message being read, to know whether it was read to its
	// end: coder/websocket would parse the rest of a message that was not as
	// a frame header. Reader goroutine only.
	msg coderMsg
}

type coderMsg struct {
	r    io.Reader
	open bool // a message was handed out and has not reached io.EOF
}

func (m *coderMsg) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if err == io.EOF {
		m.open = false
	}
	return n, err
}

var errUnread = errors.New("websocket: previous message not read to its end")

// coderBufSize, when not 0, replaces the 4 KiB read and write buffers
// coder/websocket keeps for a connection's life (net/http's hijacked
// bufio.Reader and a new bufio.Writer) with buffers of this size: coder has
// no option for them (gorilla has ReadBufferSize and WriteBufferPool).
// Measurement only (-tags coderws,coderwssmall); see BENCHMARKS.md, run G.
var coderBufSize = 0

// hijackCapture keeps the socket coder/websocket hijacks.
type hijackCapture struct {
	http.ResponseWriter
	nc net.Conn
}

func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.nc = nc
	if err != nil || coderBufSize == 0 {
		return nc, brw, err
	}
	// What the client sent after its handshake must be in the new reader's
	// buffer: Accept takes it from there (Peek(Buffered())).
	n := brw.Reader.Buffered()
	if n > coderBufSize {
		return nc, brw, nil
	}
	b, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc), coderBufSize)
	if _, err := br.Peek(n); err != nil {
		return nc, brw, nil
	}
	return nc, bufio.NewReadWriter(br, bufio.NewWriterSize(nc, coderBufSize)), nil
}

func (s *Service) upgrade(w http.ResponseWriter, r *http.Request, subprotocol string) (wsConn, error) {
	if subprotocol != "" {
		// Accept keeps a Sec-WebSocket-Protocol the handler set (as
		// gorilla's response header): exactly "phoenix", never the token.
		w.Header().Set("Sec-WebSocket-Protocol", subprotocol)
	}
	hc := &hijackCapture{ResponseWriter: w}
	ws, err := websocket.Accept(hc, r, &websocket.AcceptOptions{
		// Origins are checked before the upgrade so a refusal is an empty
		// 403. Compression stays off (the default), as with gorilla.
		InsecureSkipVerify: true,
	})
	if err != nil {
		return nil, err // Accept has answered
	}
	// The notifier limits frames itself (MaxFrame, 1009 "frame too large");
	// coder's own limit (32 KiB by default) would close with its own reason.
	ws.SetReadLimit(-1)
	return &coderConn{ws: ws, nc: hc.nc}, nil
}

func (c *coderConn) NextReader() (int, io.Reader, error) {
	if c.msg.open {
		return 0, nil, errUnread
	}
	mt, r, err := c.ws.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	c.msg = coderMsg{r: r, open: true}
	return int(mt), &c.msg, nil
}

func (c *coderConn) WriteMessage(mt int, data []byte) error {
	return c.ws.Write(context.Background(), websocket.MessageType(mt), data)
}

func (c *coderConn) SetReadDeadline(t time.Time) error  { return c.nc.SetReadDeadline(t) }
func (c *coderConn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }
func (c *coderConn) NetConn() net.Conn                  { return c.nc }
func (c *coderConn) Close() error                       { return c.ws.CloseNow() }

// sendClose runs coder's close handshake under the same bounds as the
// gorilla path: 1 s to write the close frame, 500 ms for the client's. The
// handshake skips what is left of a message that was not read to its end.
func (c *coderConn) sendClose(code int, reason string) {
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_ = c.ws.Close(websocket.StatusCode(code), reason)
}

// isCloseError: a close frame, or the socket closed without one (gorilla
// reports the latter as close code 1006, so the metric label is the same).
func isCloseError(err error) bool {
	return websocket.CloseStatus(err) != -1 || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
