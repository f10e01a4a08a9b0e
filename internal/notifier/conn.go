package notifier

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/phoenix"
)

// outFrame is one queued frame.
type outFrame struct {
	data   []byte
	binary bool
	at     time.Time // event time, for the latency metric (zero: not an event)
	trace  eventTrace
}

// conn is one WebSocket client. The handler goroutine reads and processes
// frames in order; a writer goroutine exists only while frames are queued,
// so an idle connection costs its read buffer and one parked goroutine.
type conn struct {
	s  *Service
	ws wsConn
	p  auth.Principal

	subs map[string]*sub // owned by the reader goroutine

	// tokens and lastRefill implement the client push rate limit (reader only).
	tokens     float64
	lastRefill time.Time

	mu        sync.Mutex
	cond      *sync.Cond // signalled when the queue drains or the conn closes
	queue     []outFrame
	spare     []outFrame
	writing   bool
	closed    bool
	closeCode int
	closeMsg  string
	reason    string // metric label

	// lp is set when the client speaks the long-poll transport: there is
	// no socket, and queued frames wait for the client's next poll.
	lp *lpSession
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
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "notifier is shutting down")
		return
	default:
	}
	subprotocol := ""
	if hadProtocol {
		subprotocol = "phoenix" // exactly "phoenix", never the token value
	}
	ws, err := s.upgrade(w, r, subprotocol)
	if err != nil {
		return // the upgrader has answered
	}
	c := &conn{s: s, ws: ws, p: p, subs: map[string]*sub{}, tokens: float64(2 * s.cfg.PushRate), lastRefill: time.Now()}
	c.cond = sync.NewCond(&c.mu)
	if !s.addConn(c) {
		ws.sendClose(websocket.CloseServiceRestart, "server shutting down")
		_ = ws.Close()
		return
	}
	// Read on a goroutine of its own and let the handler return: a handler
	// that stayed in its read loop kept net/http's per-connection state alive
	// (its 4 KiB bufio reader and writer, the request) for the life of every
	// WebSocket — about 9 KiB of heap per idle connection.
	go func() {
		defer s.removeConn(c)
		c.readLoop()
	}()
}

// readLoop reads and handles frames until the connection ends, then tears
// it down. A panic anywhere in it (or in a frame's handler, see handleOff)
// closes this connection with 1011 and still tears it down: it must never
// take the process and every other client with it.
func (c *conn) readLoop() {
	reason := "panic"
	defer func() {
		if v := recover(); v != nil {
			c.panicked("reading", v)
		}
		c.teardown(reason)
	}()
	reason = c.readFrames()
}

// readFrames is the read loop proper; it returns the disconnect reason.
func (c *conn) readFrames() string {
	s := c.s
	reason := "client closed"
	for {
		// Push the idle deadline forward; fail() may race with this and
		// set an expired one, so look again afterwards.
		_ = c.ws.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if c.isClosed() {
			_ = c.ws.SetReadDeadline(time.Now())
		}
		mt, r, err := c.ws.NextReader()
		if err != nil {
			switch {
			case c.isClosed():
			case isCloseError(err):
			case isTimeout(err):
				reason = "idle timeout"
				c.fail(websocket.CloseGoingAway, "idle timeout", "idle")
			default:
				reason = "read error"
			}
			break
		}
		buf := readBufs.Get().(*bytes.Buffer)
		buf.Reset()
		_, err = buf.ReadFrom(io.LimitReader(r, int64(s.cfg.MaxFrame)+1))
		if err == nil && buf.Len() > s.cfg.MaxFrame {
			readBufs.Put(buf)
			c.fail(websocket.CloseMessageTooBig, "frame too large", "frame_too_large")
			continue // wait for the close to be sent, below
		}
		if err != nil {
			readBufs.Put(buf)
			reason = "read error"
			break
		}
		if !c.isClosed() {
			c.handleOff(mt, buf.Bytes())
		}
		if buf.Cap() <= 4*s.cfg.MaxFrame {
			readBufs.Put(buf)
		}
	}
	return reason
}

// panicked logs a recovered panic with its stack and closes the
// connection with 1011 "internal error" (the client reconnects and its
// channels rejoin with last_seq, so nothing is lost).
func (c *conn) panicked(where string, v any) {
	c.s.log.Error("panic while handling a connection; closing it", "where", where, "user", c.p.User, "panic", v, "stack", string(debug.Stack()))
	c.fail(websocket.CloseInternalServerErr, "internal error", "panic")
}

// handleSafe handles one frame; a panic in it closes only this connection
// (1011), after which no further frame of it is handled.
func (c *conn) handleSafe(mt int, data []byte) {
	defer func() {
		if v := recover(); v != nil {
			c.panicked("handling a frame", v)
		}
	}()
	if hook := c.s.cfg.onFrame; hook != nil {
		hook(data)
	}
	c.handle(mt, data)
}

// handleOff handles one frame on a goroutine of its own and waits for it,
// so frames are still handled in order. A join (NATS requests, JSON) grows
// the stack it runs on to 8 KiB or more, and a goroutine keeps its stack
// until a garbage collection shrinks it — which an idle notifier seldom
// runs. The reader, parked in its read for most of a connection's life,
// thus keeps the smallest stack, and the handler's is freed when it ends.
func (c *conn) handleOff(mt int, data []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.handleSafe(mt, data)
	}()
	<-done
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// fail closes the connection with code and msg. It never blocks: it marks
// the conn closed and wakes the reader (by expiring its read deadline),
// which sends the close frame and tears down.
func (c *conn) fail(code int, msg, reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.closeCode, c.closeMsg, c.reason = true, code, msg, reason
	c.queue = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	if c.lp != nil {
		c.lp.stop()
		return
	}
	_ = c.ws.NetConn().SetReadDeadline(time.Now())
}

// teardown runs on the reader goroutine when reading ends.
func (c *conn) teardown(readReason string) {
	for _, sb := range c.subs {
		c.s.hub.remove(sb)
	}
	c.mu.Lock()
	if !c.closed {
		c.closed, c.reason = true, readReason
		c.queue = nil
	}
	code, msg, reason := c.closeCode, c.closeMsg, c.reason
	c.cond.Broadcast()
	c.mu.Unlock()
	if code != 0 {
		c.ws.sendClose(code, msg)
	}
	_ = c.ws.NetConn().SetWriteDeadline(time.Now())
	c.mu.Lock()
	for c.writing {
		c.cond.Wait()
	}
	c.mu.Unlock()
	_ = c.ws.Close()
	c.s.m.disconnects.WithLabelValues(reason).Inc()
}

// enqueueLocked queues a frame; c.mu is held. A full queue means the client
// does not keep up: it is cut off instead of slowing anyone else.
func (c *conn) enqueueLocked(f outFrame) {
	if c.closed {
		return
	}
	if len(c.queue) >= c.s.cfg.SendQueue {
		c.mu.Unlock()
		c.fail(websocket.CloseTryAgainLater, "slow consumer", "slow_consumer")
		c.mu.Lock()
		return
	}
	c.queue = append(c.queue, f)
	if c.lp != nil {
		c.lp.wake() // the held poll (or the next one) drains the queue
		return
	}
	if !c.writing {
		c.writing = true
		c.s.wg.Add(1)
		go c.writeLoop()
	}
}

func (c *conn) send(b []byte) {
	c.mu.Lock()
	c.enqueueLocked(outFrame{data: b})
	c.mu.Unlock()
}

// sendWait queues a frame, waiting for room instead of failing: used for
// replays, which run on the reader goroutine and may exceed the queue.
func (c *conn) sendWait(f outFrame) {
	deadline := time.Now().Add(c.s.cfg.WriteTimeout)
	c.mu.Lock()
	for !c.closed && len(c.queue) >= c.s.cfg.SendQueue && time.Now().Before(deadline) {
		c.cond.Wait()
	}
	c.enqueueLocked(f)
	c.mu.Unlock()
}

// writeLoop writes queued frames and exits when the queue is empty.
func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.closed {
			c.writing = false
			c.queue = nil
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		batch := c.queue
		c.queue = c.spare[:0]
		c.mu.Unlock()

		_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
		for i, f := range batch {
			mt := websocket.TextMessage
			if f.binary {
				mt = websocket.BinaryMessage
			}
			if err := c.ws.WriteMessage(mt, f.data); err != nil {
				reason, msg := "write_error", "write failed"
				if isTimeout(err) {
					reason, msg = "slow_consumer", "slow consumer"
				}
				c.fail(websocket.CloseTryAgainLater, msg, reason)
				break
			}
			if !f.at.IsZero() {
				c.s.m.pushes.Inc()
				c.s.m.latency.Observe(time.Since(f.at).Seconds())
				c.s.tracePush(f)
			}
			batch[i] = outFrame{}
		}
		c.mu.Lock()
		c.spare = batch[:0]
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// deliver is called by the hub for every event on a topic c joined.
func (c *conn) deliver(sb *sub, ev *event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sb.closed || c.closed {
		return
	}
	if sb.replaying {
		if len(sb.pending) >= 4*c.s.cfg.SendQueue {
			c.mu.Unlock()
			c.fail(websocket.CloseTryAgainLater, "slow consumer", "slow_consumer")
			c.mu.Lock()
			return
		}
		sb.pending = append(sb.pending, ev)
		return
	}
	if sb.fresh(ev) {
		c.enqueueLocked(c.pushFrame(sb, ev))
	}
}

// end is called by the hub when the server ends a subscription (phx_close
// or phx_error). During the join the frame waits until the join's reply
// and pushes have been queued.
func (c *conn) end(sb *sub, event string, payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sb.closed || c.closed {
		return
	}
	sb.closed = true
	f := phoenix.AppendFrame(nil, sb.joinRef, sb.joinRef, sb.topic, event, payload)
	if sb.replaying {
		sb.endFrame = f
		return
	}
	c.enqueueLocked(outFrame{data: f})
}

// lookup returns the live subscription to topic, forgetting one the server
// ended. Reader goroutine only.
func (c *conn) lookup(topic string) *sub {
	sb := c.subs[topic]
	if sb == nil {
		return nil
	}
	c.mu.Lock()
	ended := sb.closed
	c.mu.Unlock()
	if ended {
		delete(c.subs, topic)
		return nil
	}
	return sb
}

func (c *conn) pushFrame(sb *sub, ev *event) outFrame {
	b := phoenix.AppendFrame(make([]byte, 0, len(ev.payload)+len(sb.topic)+56), sb.joinRef, phoenix.Ref{}, sb.topic, ev.name, ev.payload)
	if sb.kind == kindUser && ev.streamSeq != 0 {
		// Frames are queued and written in order, so when this one arrives
		// every event the topic handed out before it (up to ev.mark) has
		// arrived too; a replayed event follows all earlier ones on the
		// filter after the join's last_seq.
		if ev.replayed {
			sb.resume = max(sb.resume, ev.streamSeq)
		} else {
			sb.resume = max(sb.resume, ev.mark)
		}
		// The frame ends with the payload's '}' and the array's ']'.
		b = append(b[:len(b)-2], `,"resume_seq":`...)
		b = strconv.AppendUint(b, sb.resume, 10)
		b = append(b, '}', ']')
	}
	return outFrame{data: b, at: ev.at, trace: ev.trace}
}

var _ sink = (*conn)(nil)
