package notifier

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/gorilla/websocket"
)

// wsTransport is the WebSocket transport (gorilla/websocket for the
// upgrade and the reading). Its reader goroutine reads and hands over
// frames in order; frames are written inline or by a writer goroutine that
// exists only while it has something to write (writer.go), so an idle
// connection costs its read buffer and one parked goroutine.
type wsTransport struct {
	c   *session
	ws  *websocket.Conn
	raw syscall.RawConn // for inline writes; nil: the writer goroutine writes everything

	w wsWriter
	// peerClose is the close code the client sent, echoed in close.
	peerClose int
}

var readBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (s *Service) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	forbid := func() { w.WriteHeader(http.StatusForbidden) } // Phoenix: empty 403, no upgrade
	if r.URL.Query().Get("vsn") != "2.0.0" || !s.originAllowed(r) {
		forbid()
		return
	}
	token, hadProtocol := tokenFromRequest(r)
	p, err := s.authenticate(token)
	if err != nil {
		forbid()
		return
	}
	select {
	case <-s.quit:
		w.Header().Set("Retry-After", "1")
		httpx.WriteError(w, http.StatusServiceUnavailable, "shutting_down", "notifier is shutting down")
		return
	default:
	}
	var hdr http.Header
	if hadProtocol {
		// Exactly "phoenix", never the token value.
		hdr = http.Header{"Sec-Websocket-Protocol": {"phoenix"}}
	}
	ws, err := s.upgrader.Upgrade(w, r, hdr)
	if err != nil {
		return // the upgrader has answered
	}
	// One allocation for the session and its transport.
	both := &struct {
		c session
		t wsTransport
	}{}
	c, t := &both.c, &both.t
	t.c, t.ws, t.raw = c, ws, rawConn(ws.NetConn())
	c.init(s, p, t)
	// Every frame is written by wsWriter, which frames it itself: the
	// pong and the close reply too, so none is written into the middle of
	// another (gorilla's own handlers write on the socket directly).
	ws.SetPingHandler(t.onPing)
	ws.SetCloseHandler(t.onClose)
	if !s.addConn(c) {
		d := disconnectShutdown
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(d.code, d.reason), time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	// Read on a goroutine of its own and let the handler return: a handler
	// that stayed in its read loop kept net/http's per-connection state alive
	// (its 4 KiB bufio reader and writer, the request) for the life of every
	// WebSocket — about 9 KiB of heap per idle connection.
	go c.run()
}

// loop reads and hands over frames until the connection ends, and returns
// why it ended.
func (t *wsTransport) loop() disconnect {
	c, s := t.c, t.c.s
	for {
		// Push the idle deadline forward; interrupt may race with this
		// and set an expired one, so look again afterwards.
		_ = t.ws.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if c.isClosed() {
			_ = t.ws.SetReadDeadline(time.Now())
		}
		mt, r, err := t.ws.NextReader()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case c.isClosed(), errors.As(err, &ce):
				return disconnectClientClosed
			case isTimeout(err):
				c.fail(disconnectIdle)
				return disconnectIdle
			default:
				return disconnectReadError
			}
		}
		buf := readBufs.Get().(*bytes.Buffer)
		buf.Reset()
		_, err = buf.ReadFrom(io.LimitReader(r, int64(s.cfg.MaxFrame)+1))
		if err == nil && buf.Len() > s.cfg.MaxFrame {
			readBufs.Put(buf)
			c.fail(disconnectFrameTooLarge)
			continue // wait for the close to be sent, below
		}
		if err != nil {
			readBufs.Put(buf)
			return disconnectReadError
		}
		if !c.isClosed() {
			t.receive(mt == websocket.BinaryMessage, buf.Bytes())
		}
		if buf.Cap() <= 4*s.cfg.MaxFrame {
			readBufs.Put(buf)
		}
	}
}

// receive hands one frame to the session on a goroutine of its own and
// waits for it, so frames are still handled in order. A join (NATS
// requests, JSON) grows the stack it runs on to 8 KiB or more, and a
// goroutine keeps its stack until a garbage collection shrinks it — which
// an idle notifier seldom runs. The reader, parked in its read for most of
// a connection's life, thus keeps the smallest stack, and the handler's is
// freed when it ends.
func (t *wsTransport) receive(binary bool, data []byte) {
	t.c.in.Lock()
	defer t.c.in.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.c.receive(binary, data)
	}()
	<-done
}

// onPing queues the pong (gorilla calls it on the reader goroutine).
func (t *wsTransport) onPing(data string) error {
	t.c.mu.Lock()
	t.c.enqueueLocked(outFrame{data: []byte(data), pong: true})
	t.c.mu.Unlock()
	return nil
}

// onClose remembers the client's close code for close to echo; reading
// then ends with a *websocket.CloseError.
func (t *wsTransport) onClose(code int, _ string) error {
	t.peerClose = code
	return nil
}

// interrupt wakes the reader by expiring its read deadline.
func (t *wsTransport) interrupt() {
	_ = t.ws.NetConn().SetReadDeadline(time.Now())
}

// close sends the close frame, stops the writer and closes the socket.
// The close frame is d's, or the echo of the client's own close.
func (t *wsTransport) close(d disconnect) {
	conn := t.ws.NetConn()
	// A writer stuck on a client that does not read gives up within a
	// second, and one about to write will not wait longer; the close frame
	// is then not sent either.
	stopBy := time.Now().Add(time.Second)
	t.c.mu.Lock()
	t.w.stopBy = stopBy
	t.c.mu.Unlock()
	_ = conn.SetWriteDeadline(stopBy)
	t.waitWriter()
	var payload []byte
	switch {
	case d.code != closeNone:
		payload = websocket.FormatCloseMessage(d.code, d.reason)
	case t.peerClose != 0:
		payload = websocket.FormatCloseMessage(t.peerClose, "")
	}
	t.c.mu.Lock()
	broken := t.w.broken || t.w.rest != nil // a frame may be cut short
	t.c.mu.Unlock()
	if payload != nil && !broken {
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = conn.Write(appendWSFrame(nil, wsOpClose, payload))
	}
	if d.code != closeNone {
		// Half-close and drain until the client answers (or 500ms), so
		// unread input does not turn our close into a reset that loses the
		// close frame.
		if tc, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<20))
	}
	_ = t.ws.Close()
}

var _ transport = (*wsTransport)(nil)
