package notifier

import (
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/phoenix"
)

// session is one Phoenix client, whatever transport carries it: its
// subscriptions, its push rate limit, its bounded send queue, how it ends.
// Inbound frames are handled one at a time, in order (rule 5 of
// docs/phoenix-protocol.md#61-server-rules); outbound frames wait in the
// queue until the transport takes them.
type session struct {
	s *Service
	t transport
	p auth.Principal

	// in is held while inbound frames are handled, and by the teardown
	// that drops the subscriptions.
	in   sync.Mutex
	subs map[string]*sub // guarded by in
	// tokens and lastRefill implement the client push rate limit (in).
	tokens     float64
	lastRefill time.Time
	presence   localConn // the server's part of its presence metas (in)

	mu     sync.Mutex
	cond   sync.Cond // on mu; signalled when the queue drains or the session closes
	queue  []outFrame
	spare  []outFrame
	closed bool
	disc   disconnect // why it closed
	// batching is set while a join queues its replay: the transport
	// then writes the queue in batches, not a write per frame.
	batching bool
}

// init sets up a new session of p on t; the transport allocates it, with
// itself, in one object.
func (c *session) init(s *Service, p auth.Principal, t transport) {
	c.s, c.p, c.t = s, p, t
	c.subs = map[string]*sub{}
	c.tokens, c.lastRefill = float64(2*s.cfg.PushRate), time.Now()
	c.cond.L = &c.mu
}

// run runs the transport's loop, which reads the client (or waits for the
// session to end) and returns why reading ended, then tears the session
// down. A panic in it closes this session with 1011 and still tears it
// down: it must never take the process and every other client with it.
func (c *session) run() {
	defer c.s.removeConn(c)
	if exp := c.p.Expires; !exp.IsZero() {
		// The session ends when its token does: a client kept connected
		// would otherwise keep receiving on a token that no longer
		// admits it (docs/phoenix-protocol.md#12-token-expiry).
		expiry := time.AfterFunc(time.Until(exp), func() { c.fail(disconnectTokenExpired) })
		defer expiry.Stop()
	}
	d := disconnectPanic
	defer func() {
		if v := recover(); v != nil {
			c.panicked("reading", v)
		}
		c.teardown(d)
	}()
	d = c.t.loop()
}

// teardown drops the subscriptions, closes the session (with d, unless it
// failed before) and the transport, and counts the disconnect.
func (c *session) teardown(d disconnect) {
	c.in.Lock()
	for _, sb := range c.subs {
		c.s.unsubscribe(sb)
	}
	clear(c.subs)
	c.in.Unlock()
	c.mu.Lock()
	if !c.closed {
		c.closed, c.disc = true, d
	}
	c.queue = nil
	d = c.disc
	c.cond.Broadcast()
	c.mu.Unlock()
	c.t.close(d)
	c.s.countDisconnect(d)
}

// panicked logs a recovered panic with its stack and closes the session
// with 1011 "internal error" (the client reconnects and its channels
// rejoin with last_seq, so nothing is lost).
func (c *session) panicked(where string, v any) {
	c.s.log.Error("panic while handling a connection; closing it", "where", where, "user", c.p.User, "panic", v, "stack", string(debug.Stack()))
	c.fail(disconnectPanic)
}

// receive handles one inbound frame; c.in is held. A panic in it closes
// only this session (1011), after which no further frame of it is handled.
func (c *session) receive(binary bool, data []byte) {
	defer func() {
		if v := recover(); v != nil {
			c.panicked("handling a frame", v)
		}
	}()
	if hook := c.s.cfg.onFrame; hook != nil {
		hook(data)
	}
	c.handle(binary, data)
}

func (c *session) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// closedFor reports whether the session closed, and why.
func (c *session) closedFor() (disconnect, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.disc, c.closed
}

// fail closes the session with d. It never blocks: it marks the session
// closed and interrupts the transport, whose goroutine tears it down.
func (c *session) fail(d disconnect) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.disc = true, d
	c.queue = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	c.t.interrupt()
}

// enqueueLocked queues a frame; c.mu is held. A full queue means the client
// does not keep up: it is cut off instead of slowing anyone else.
func (c *session) enqueueLocked(f outFrame) {
	if c.closed {
		return
	}
	if len(c.queue) >= c.s.cfg.SendQueue {
		c.mu.Unlock()
		c.fail(disconnectSlowConsumer)
		c.mu.Lock()
		return
	}
	c.queue = append(c.queue, f)
	c.t.wake()
}

func (c *session) send(b []byte) {
	c.mu.Lock()
	c.enqueueLocked(outFrame{data: b})
	c.mu.Unlock()
}

// take returns the queued frames for the transport to write, in order, and
// empties the queue; nil when there are none or the session is closed.
func (c *session) take() []outFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 || c.closed {
		c.queue = nil
		c.cond.Broadcast()
		return nil
	}
	batch := c.queue
	c.queue = c.spare[:0]
	c.cond.Broadcast() // a join's replay may be waiting for room
	return batch
}

// recycle hands a written batch back, to queue the next frames in.
func (c *session) recycle(batch []outFrame) {
	clear(batch)
	c.mu.Lock()
	c.spare = batch[:0]
	c.cond.Broadcast()
	c.mu.Unlock()
}

// queued reports whether frames wait to be taken.
func (c *session) queued() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue) > 0 && !c.closed
}

// sent records that the transport wrote f to the client: the push metrics
// and, for a traced event, its push span.
func (c *session) sent(f outFrame) {
	if f.at.IsZero() {
		return
	}
	c.s.m.pushes.Inc()
	c.s.m.latency.Observe(time.Since(f.at).Seconds())
	c.s.tracePush(f)
}

// deliver is called by the hub for every event on a topic c joined.
func (c *session) deliver(sb *sub, ev *event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sb.closed || c.closed {
		return
	}
	if sb.replaying {
		if !sb.hold(ev, 4*c.s.cfg.SendQueue) {
			c.mu.Unlock()
			c.fail(disconnectSlowConsumer)
			c.mu.Lock()
		}
		return
	}
	if sb.fresh(ev) {
		c.enqueueLocked(c.pushFrame(sb, ev))
	}
}

// end is called by the hub when the server ends a subscription (phx_close
// or phx_error). During the join the frame waits until the join's reply
// and pushes have been queued.
func (c *session) end(sb *sub, event string, payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sb.closed || c.closed {
		return
	}
	sb.closed = true
	if sb.replaying {
		sb.ended = &serverEnd{event: event, payload: payload}
		return
	}
	c.enqueueLocked(outFrame{data: c.endFrame(sb, serverEnd{event, payload})})
}

func (c *session) endFrame(sb *sub, e serverEnd) []byte {
	return phoenix.AppendFrame(nil, sb.joinRef, sb.joinRef, sb.topic, e.event, e.payload)
}

// lookup returns the live subscription to topic, forgetting one the server
// ended; c.in is held.
func (c *session) lookup(topic string) *sub {
	sb := c.subs[topic]
	if sb == nil {
		return nil
	}
	c.mu.Lock()
	ended := sb.closed
	c.mu.Unlock()
	if ended {
		c.s.presence.untrack(sb)
		delete(c.subs, topic)
		return nil
	}
	return sb
}

func (c *session) pushFrame(sb *sub, ev *event) outFrame {
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

// allow is the client push rate limit: a token bucket of PushRate per
// second with a burst of twice that; c.in is held.
func (c *session) allow() bool {
	now := time.Now()
	rate := float64(c.s.cfg.PushRate)
	c.tokens = min(2*rate, c.tokens+now.Sub(c.lastRefill).Seconds()*rate)
	c.lastRefill = now
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

var _ sink = (*session)(nil)
