package notifier

import (
	"bytes"

	"github.com/beamline/beamline/internal/phoenix"
)

// handle processes one inbound frame, in arrival order (rule 5 of
// docs/phoenix-protocol.md#61-server-rules).
func (c *session) handle(binary bool, data []byte) {
	f, err := phoenix.Decode(data, binary)
	if err != nil {
		if f.Addressable() && f.Ref.Valid {
			c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason("malformed frame")))
			return
		}
		c.fail(disconnectMalformed)
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
		if c.handleTwoWay(sb, f) {
			return
		}
		if f.Event == c.s.cfg.unanswered && f.Event != "" {
			return // a test hook: a push the server never answers
		}
		c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "error", phoenix.ErrorReason("unknown event")))
	}
}

func (c *session) leave(sb *sub, f phoenix.Frame) {
	c.s.unsubscribe(sb)
	c.mu.Lock()
	sb.closed = true
	c.mu.Unlock()
	delete(c.subs, sb.topic)
	c.send(phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", nil))
	c.send(phoenix.AppendFrame(nil, sb.joinRef, sb.joinRef, sb.topic, phoenix.EventClose, nil))
}
