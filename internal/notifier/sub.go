package notifier

import (
	"time"

	"github.com/beamline/beamline/internal/phoenix"
)

// event is one thing to push to a topic's subscribers. Events read from the
// stream carry both sequences; server broadcasts carry neither.
type event struct {
	name      string // the Phoenix event name ("job")
	payload   []byte // JSON object, encoded once for every subscriber
	short     string // the short envelope type ("progress")
	jobSeq    uint64
	streamSeq uint64
	at        time.Time // the envelope's time, for the latency metric
	terminal  bool
	trace     eventTrace // for the push span (zero: not traced)
	late      bool       // read to fill a gap after a later event of another job went out
	// mark is the topic's contiguous watermark when the topic handed the
	// event out (0: not handed out by a topic, e.g. a join's replay).
	mark uint64
	// replayed: read by a user-topic join's replay, which returns every
	// event on the filter after the client's last_seq in stream order.
	replayed bool
}

// sink is where a subscription's events go: a session (on any transport)
// or an SSE stream. Neither method may block.
type sink interface {
	deliver(sb *sub, ev *event)
	// end tells the subscriber the server ended the subscription with
	// event (phx_close or phx_error) and payload.
	end(sb *sub, event string, payload []byte)
}

// sub is one (connection, topic) subscription. The fields below sink are
// guarded by the sink's own lock.
type sub struct {
	topic   string
	kind    topicKind
	joinRef phoenix.Ref
	sink    sink

	last      uint64   // highest key delivered (job seq, or stream seq for user topics)
	base      uint64   // the last key the join itself covered (snapshot and replay)
	replaying bool     // join in progress: live events wait in pending
	pending   []*event // live events that arrived during the join
	closed    bool     // left, replaced, or ended by the server
	// resume (user topics) is the highest stream seq R such that every
	// event of the topic up to R reached this subscriber (pushed, or
	// covered by its join): the resume_seq of its pushes.
	resume uint64
	// joinMark is the topic's watermark right after sb was added (set by
	// hub.add on the joining goroutine): every event up to it was stored
	// before the join read its snapshot or replay.
	joinMark uint64
	// joinPos is the topic's position right after sb was added: every
	// event the topic handled before is at or below it, so the join's
	// snapshot and replay must cover the stream up to it (later events
	// reach sb through the topic).
	joinPos uint64
	// ended is how the server ended the topic during the join: the sink
	// tells its client after the join's pushes (see handOver).
	ended *serverEnd
	// msgRate limits a studio member's messages (the session's in lock).
	msgRate bucket
}

// serverEnd is the event (phx_close or phx_error) and payload with which
// the server ended a subscription.
type serverEnd struct {
	event   string
	payload []byte
}

// key is what a subscription de-duplicates and orders by.
func (sb *sub) key(ev *event) uint64 {
	if sb.kind == kindUser {
		return ev.streamSeq
	}
	return ev.jobSeq
}

// fresh reports whether ev is new for sb, and records it. Events without
// sequences (broadcasts) are always fresh. A late event (a gap filled on one
// job of a user topic after another job's later event went out) is new when
// the join did not cover it: the topic delivers each stream seq once, so it
// cannot be a duplicate.
func (sb *sub) fresh(ev *event) bool {
	k := sb.key(ev)
	if k == 0 {
		return true
	}
	if k > sb.last {
		sb.last = k
		return true
	}
	return ev.late && sb.kind == kindUser && k > sb.base
}

// hold keeps a live event that arrived during the join for handOver; it
// returns false, keeping nothing, when limit events wait already (the sink
// then cuts its client off).
func (sb *sub) hold(ev *event, limit int) bool {
	if len(sb.pending) >= limit {
		return false
	}
	sb.pending = append(sb.pending, ev)
	return true
}
