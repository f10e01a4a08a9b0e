package notifier

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/gorilla/websocket"

	"github.com/beamline/beamline/internal/phoenix"
)

// Join failure reasons (the "reason" of the error reply; also metric labels).
const (
	reasonUnmatched    = "unmatched topic"
	reasonUnauthorized = "unauthorized"
	reasonNotFound     = "not_found"
	reasonTooMany      = "too many channels joined"
	reasonInvalid      = "invalid topic"
	reasonBadParams    = "invalid last_seq"
	reasonUnavailable  = "unavailable"
	reasonRateLimited  = "rate limited"
)

// handle processes one inbound frame, in arrival order (rule 5 of
// docs/phoenix-protocol.md#61-server-rules).
func (c *conn) handle(mt int, data []byte) {
	var f phoenix.Frame
	var err error
	if mt == websocket.BinaryMessage {
		f, err = phoenix.DecodeBinary(data)
	} else {
		f, err = phoenix.DecodeFrame(data)
	}
	if err != nil {
		if f.Addressable() && f.Ref.Valid {
			c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason("malformed frame")))
			return
		}
		c.fail(websocket.CloseInvalidFramePayloadData, "malformed frame", "malformed_frame")
		return
	}
	if f.Topic == phoenix.TopicPhoenix && f.Event == phoenix.EventHB {
		c.send(phoenix.Reply(phoenix.Ref{}, f.Ref, phoenix.TopicPhoenix, "ok", nil))
		return
	}
	if !c.allow() {
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason(reasonRateLimited)))
		return
	}
	if f.Event == phoenix.EventJoin {
		c.join(f)
		return
	}
	sb := c.lookup(f.Topic)
	if sb == nil {
		if f.Event == phoenix.EventLeave { // rule 4, docs/phoenix-protocol.md#61-server-rules
			c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", nil))
			return
		}
		c.send(phoenix.Reply(phoenix.Ref{}, f.Ref, f.Topic, "error", phoenix.ErrorReason(reasonUnmatched)))
		return
	}
	if f.JoinRef.Valid && f.JoinRef != sb.joinRef {
		return // rule 3 (docs/phoenix-protocol.md#61-server-rules): stale join_ref, no reply
	}
	switch f.Event {
	case phoenix.EventLeave:
		c.leave(sb, f)
	case "ping", "bin":
		// Echo, so clients can measure round trips and check replies; a
		// binary push gets a binary reply with the same bytes
		// (docs/phoenix-protocol.md#7-binary-frames).
		if f.Binary {
			if b := phoenix.BinaryReply(f.JoinRef, f.Ref, f.Topic, "ok", f.Payload); b != nil {
				c.mu.Lock()
				c.enqueueLocked(outFrame{data: b, binary: true})
				c.mu.Unlock()
			}
			return
		}
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", bytes.Clone(f.Payload)))
	default:
		if f.Event == c.s.cfg.unanswered && f.Event != "" {
			return // a test hook: a push the server never answers
		}
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason("unknown event")))
	}
}

// allow is the client push rate limit: a token bucket of PushRate per
// second with a burst of twice that.
func (c *conn) allow() bool {
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

// parseJoinParams reads {"last_seq": N}; bad is true when last_seq is
// present but not a non-negative integer.
func parseJoinParams(payload []byte) (lastSeq *uint64, bad bool) {
	var p map[string]json.RawMessage
	if json.Unmarshal(payload, &p) != nil {
		return nil, true
	}
	raw, ok := p["last_seq"]
	if !ok || string(raw) == "null" {
		return nil, false
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return nil, true
	}
	v, bad := parseSeq(n)
	if bad {
		return nil, true
	}
	return &v, false
}

func (c *conn) join(f phoenix.Frame) {
	s := c.s
	kind, id, err := parseTopic(f.Topic)
	if err != "" {
		s.m.joins.WithLabelValues(kind.String(), metricLabel(err)).Inc()
		jr := f.JoinRef
		if err == reasonUnmatched {
			jr = phoenix.Ref{} // as Phoenix sends it
		}
		c.send(phoenix.Reply(jr, f.Ref, f.Topic, "error", phoenix.ErrorReason(err)))
		return
	}
	lastSeq, perr := parseJoinParams(f.Payload)
	if perr {
		s.m.joins.WithLabelValues(kind.String(), metricLabel(reasonBadParams)).Inc()
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason(reasonBadParams)))
		return
	}
	old := c.lookup(f.Topic)
	if old == nil && len(c.subs) >= s.cfg.MaxChannels {
		for t := range c.subs {
			c.lookup(t) // forget channels the server ended
		}
	}
	if old == nil && len(c.subs) >= s.cfg.MaxChannels {
		s.m.joins.WithLabelValues(kind.String(), metricLabel(reasonTooMany)).Inc()
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason(reasonTooMany)))
		return
	}
	sb := &sub{topic: f.Topic, kind: kind, joinRef: f.JoinRef, sink: c, replaying: true}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	res := s.open(ctx, c.p, sb, kind, id, lastSeq)
	cancel()
	s.m.joins.WithLabelValues(kind.String(), metricLabel(res.reason)).Inc()

	if old != nil { // rule 2 (docs/phoenix-protocol.md#61-server-rules): one subscription per (connection, topic)
		s.hub.remove(old)
		c.mu.Lock()
		old.closed = true
		c.mu.Unlock()
		delete(c.subs, f.Topic)
	}
	if res.reason != "" {
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason(res.reason)))
	} else {
		c.subs[f.Topic] = sb
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", res.response))
	}
	if old != nil {
		c.send(phoenix.AppendFrame(nil, old.joinRef, old.joinRef, f.Topic, phoenix.EventClose, nil))
	}
	if res.reason != "" {
		return
	}
	// Replay what was missed, then what arrived live meanwhile, each only
	// if newer than what was already sent: the hand-over is gap- and
	// duplicate-free because the live subscription started before the
	// snapshot and the replay were read.
	for _, ev := range res.replay {
		c.mu.Lock()
		for !c.closed && len(c.queue) >= s.cfg.SendQueue {
			c.cond.Wait()
		}
		if sb.fresh(ev) {
			c.enqueueLocked(c.pushFrame(sb, ev))
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	sb.base = sb.last
	for _, ev := range sb.pending {
		if sb.fresh(ev) {
			c.enqueueLocked(c.pushFrame(sb, ev))
		}
	}
	sb.pending, sb.replaying = nil, false
	if sb.endFrame != nil { // the server ended the topic meanwhile
		c.enqueueLocked(outFrame{data: sb.endFrame})
		sb.endFrame = nil
	}
	c.mu.Unlock()
}

func (c *conn) leave(sb *sub, f phoenix.Frame) {
	c.s.hub.remove(sb)
	c.mu.Lock()
	sb.closed = true
	c.mu.Unlock()
	delete(c.subs, sb.topic)
	c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", nil))
	c.send(phoenix.AppendFrame(nil, sb.joinRef, sb.joinRef, sb.topic, phoenix.EventClose, nil))
}

func parseSeq(n json.Number) (uint64, bool) {
	i, err := n.Int64()
	if err != nil || i < 0 {
		return 0, true
	}
	return uint64(i), false
}

func metricLabel(reason string) string {
	switch reason {
	case "":
		return "ok"
	case reasonUnmatched:
		return "unmatched_topic"
	case reasonTooMany:
		return "too_many_channels"
	case reasonInvalid:
		return "invalid_topic"
	case reasonBadParams:
		return "invalid_params"
	case reasonRateLimited:
		return "rate_limited"
	}
	return reason
}
