package notifier

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// wsWriter is the write side of a WebSocket session. It frames the queued
// frames itself (RFC 6455, server to client: unmasked, uncompressed) and
// writes all that is queued in one write, in one of two ways:
//
//   - inline, by the goroutine that queued the frame (a topic's lane, a
//     join, a heartbeat reply), while it holds the session's lock: one
//     non-blocking write attempt (tryWrite). The socket's buffer has room
//     for it but on a client that stopped reading, so this is nearly always
//     all there is to a push: no goroutine started, no hand-off, one write
//     system call. The push tail came largely from those hand-offs on a
//     busy machine (BENCHMARKS.md, Run W).
//   - by a writer goroutine, which exists only while it has something to
//     write, so an idle client costs no writer: when the attempt would
//     have blocked (the rest, rest, is written first, with the deadline
//     that tells a slow consumer), during a join's replay (batching: the
//     replay is written in batches, not a write per event), or when the
//     connection has no file descriptor to try (TLS served by the
//     notifier itself).
//
// Only one of them writes at a time: running is the right to write to the
// socket, taken by compare-and-set. Every frame goes through here, pongs
// and the close frame too, so no frame is ever cut by another — with one
// exception we do not control: on a protocol error of the client (an
// unmasked frame, a bad opcode or close code) gorilla writes its 1002
// close itself, on the reader goroutine, and the connection ends. Only
// that client's stream can suffer.
//
// An inline write reports its frames (the push metrics, a traced event's
// span) under the session's lock, on the goroutine that queued them: a
// tracer whose span processor exports synchronously slows the lanes.
type wsWriter struct {
	running atomic.Bool // someone writes to the socket (or is about to)
	rest    *wsRest     // an inline write's unwritten end (c.mu)
	broken  bool        // a write failed, maybe mid-frame: nothing may follow (c.mu)
	stopBy  time.Time   // set by close: no write may last beyond it (c.mu)
}

// wsRest is the end of an inline write that would have blocked, and the
// frames it finishes (their push metrics are counted once it is written).
type wsRest struct {
	data   []byte
	frames []outFrame
}

// WebSocket opcodes (RFC 6455 §5.2).
const (
	wsOpText   = 0x1
	wsOpBinary = 0x2
	wsOpClose  = 0x8
	wsOpPong   = 0xA
)

// appendWSFrame appends one final, unmasked frame of op carrying payload.
func appendWSFrame(b []byte, op byte, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|op, byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|op, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|op, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

func (f outFrame) opcode() byte {
	switch {
	case f.pong:
		return wsOpPong
	case f.binary:
		return wsOpBinary
	}
	return wsOpText
}

// wsBufs holds the buffers frames are framed into for one write.
var wsBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func frameAll(frames []outFrame) *[]byte {
	bp := wsBufs.Get().(*[]byte)
	b := (*bp)[:0]
	for _, f := range frames {
		b = appendWSFrame(b, f.opcode(), f.data)
	}
	*bp = b
	return bp
}

func putBuf(bp *[]byte) {
	if cap(*bp) <= 64<<10 {
		wsBufs.Put(bp)
	}
}

// wake is called with c.mu held when a frame was queued: it writes the
// queue inline, or starts the writer goroutine for it.
func (t *wsTransport) wake() {
	c := t.c
	if !t.w.running.CompareAndSwap(false, true) {
		return // the writer goroutine runs: it takes the queue
	}
	if t.raw != nil && !c.batching && t.writeInline() {
		t.w.running.Store(false)
		return
	}
	c.s.wg.Add(1)
	go t.run()
}

// writeInline makes one non-blocking attempt to write the queue; c.mu is
// held and t owns the socket. It reports whether everything was written;
// otherwise what was not is in t.w.rest for the writer goroutine (a
// failed write, too: the writer's write meets the error and ends the
// session, which cannot be done under c.mu).
func (t *wsTransport) writeInline() bool {
	c := t.c
	frames := c.queue
	if len(frames) == 0 {
		return true
	}
	bp := frameAll(frames)
	n, err := tryWrite(t.raw, *bp)
	if err == nil && n == len(*bp) {
		for _, f := range frames {
			c.sent(f)
		}
	} else {
		t.w.rest = &wsRest{data: append([]byte(nil), (*bp)[n:]...), frames: append([]outFrame(nil), frames...)}
	}
	putBuf(bp)
	clear(frames)
	c.queue = frames[:0]
	c.cond.Broadcast() // a join's replay may be waiting for room
	return t.w.rest == nil
}

// run is the writer goroutine: it writes the rest of an inline write,
// then what the session queued, batch by batch, until the queue is empty.
// A failed write ends the session: a timeout means the client does not
// keep up (slow consumer).
func (t *wsTransport) run() {
	c := t.c
	defer c.s.wg.Done()
	conn := t.ws.NetConn()
	write := func(b []byte, frames []outFrame) {
		c.mu.Lock()
		dl := time.Now().Add(c.s.cfg.WriteTimeout)
		if !t.w.stopBy.IsZero() && t.w.stopBy.Before(dl) {
			dl = t.w.stopBy // the session is closing: give up with it
		}
		c.mu.Unlock()
		_ = conn.SetWriteDeadline(dl)
		if _, err := conn.Write(b); err != nil {
			c.mu.Lock()
			t.w.broken = true
			c.mu.Unlock()
			d := disconnectWriteError
			if isTimeout(err) {
				d = disconnectSlowConsumer
			}
			c.fail(d)
			return
		}
		for _, f := range frames {
			c.sent(f)
		}
	}
	for {
		c.mu.Lock()
		rest := t.w.rest
		t.w.rest = nil
		c.mu.Unlock()
		if rest != nil {
			write(rest.data, rest.frames)
		}
		batch := c.take()
		if batch == nil {
			// Inline writes check the deadline: leave none behind.
			_ = conn.SetWriteDeadline(time.Time{})
			c.mu.Lock()
			t.w.running.Store(false)
			// A frame queued before the store saw a writer running.
			if len(c.queue) > 0 && !c.closed && t.w.running.CompareAndSwap(false, true) {
				c.mu.Unlock()
				continue
			}
			c.cond.Broadcast() // for wait
			c.mu.Unlock()
			return
		}
		bp := frameAll(batch)
		write(*bp, batch)
		putBuf(bp)
		c.recycle(batch)
	}
}

// waitWriter waits for the writer goroutine to exit; the session is closed
// (so no frame is queued any more). (The session's condition, not a
// WaitGroup: it costs an idle connection nothing.)
func (t *wsTransport) waitWriter() {
	c := t.c
	c.mu.Lock()
	for t.w.running.Load() {
		c.cond.Wait()
	}
	c.mu.Unlock()
}

// isTimeout reports whether err is a timeout (a deadline or a context's).
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
