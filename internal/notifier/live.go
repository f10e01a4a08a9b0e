package notifier

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
)

// catchUpAttempts is how many sweeps in a row may fail to read a topic's
// missed events before its channels are errored (phx_error: the clients
// rejoin and replay from their last_seq instead of living with a silent
// gap). The sweeper retries a failing topic on every tick (about 1 s).
const catchUpAttempts = 8

// Bounds of one stream read made while holding a topic's lock: a lane's
// read is shorter, since the lane's other topics wait for it.
const (
	laneReadTimeout  = 2 * time.Second
	sweepReadTimeout = 5 * time.Second
)

// floor is the stream seq up to which subject has been handled: the
// topic's contiguous watermark (at least its start) or the last event
// delivered on it. t.mu is held.
func (t *topic) floor(subject string) uint64 { return max(t.mark, t.last[subject]) }

// advance records that the event at seq on subject was handled. t.mu is held.
func (t *topic) advance(subject string, seq uint64) {
	t.last[subject] = seq
	t.pos = max(t.pos, seq)
}

// prune forgets per-subject positions the watermark (or the stream's first
// seq) made redundant: floor gives the same answer without them, and no
// read can return an event below the stream's first seq. This keeps a user
// topic's map to the jobs active since the last sweep. t.mu is held.
func (t *topic) prune(firstSeq uint64) {
	for subj, seq := range t.last {
		if seq <= t.mark || seq < firstSeq {
			delete(t.last, subj)
		}
	}
}

// onLive handles one re-published event; it runs on the topic's lane and
// ctx is the lanes' (cancelled at shutdown). The stream seq comes from
// Nats-Sequence, so the live path
// costs no JetStream request. Nats-Last-Sequence is the stream seq of the
// previous event on the same subject: when it is beyond what this topic
// delivered for that subject, a message was missed and the missing ones are
// read from the stream first. Messages the client library dropped (slow
// consumer: the topic's lane was full) are also noticed by its dropped
// count on the topic's next message; a dropped last event of a job, with no
// next message, is read by the reconciliation sweep (see lane).
//
// A lane never retries a read: when one fails, or returns less than the
// stream provably holds (the event at Nats-Last-Sequence is missing from
// the answer: a direct get answered by a lagging replica), the message is
// left unhandled and the topic is marked stale, so the sweeper reads it from
// the stream on its next tick. The lane moves on to its other topics.
func (h *hub) onLive(ctx context.Context, t *topic, m *nats.Msg) {
	seq, err1 := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	prev, err2 := strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
	subject, ok := envelope.EventSubjectOfLive(m.Subject)
	if err1 != nil || err2 != nil || !ok || seq == 0 {
		h.log.Warn("live event without stream sequence headers", "subject", m.Subject)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended || t.nsub == nil {
		return
	}
	if d, err := t.nsub.Dropped(); err == nil && uint64(d) != t.dropped {
		// Whatever was dropped arrived after the last message handled.
		t.dropped = uint64(d)
		from := max(t.mark, t.live) + 1
		if _, _, err := h.catchUp(ctx, laneReadTimeout, t, t.subject, from, 0); err != nil {
			h.leaveToSweeper(t, err)
			return
		}
	}
	// t.live moves only past a message handled: a drop noticed later reads
	// from it on, so a message whose gap could not be filled (left to the
	// sweeper) must be read again then, not skipped, or the events the
	// drop recovery delivers after it would raise its subject's floor past
	// it and the sweeper would skip it too.
	floor := t.floor(subject)
	if seq <= floor {
		t.live = max(t.live, seq)
		return // before the topic began, or already read from the stream
	}
	if prev > floor {
		if _, _, err := h.catchUp(ctx, laneReadTimeout, t, subject, floor+1, seq); err != nil {
			h.leaveToSweeper(t, err)
			return
		}
		if f := t.floor(subject); f < prev {
			// The stream holds prev (Nats-Last-Sequence says so) but the
			// read did not return it: delivering seq now would skip it.
			h.leaveToSweeper(t, fmt.Errorf("%w: read up to %d on %s, stream holds %d", errStreamRead, f, subject, prev))
			return
		}
	}
	t.live = max(t.live, seq)
	t.advance(subject, seq)
	head, err := envelope.DecodeEventHead(m.Data)
	if err != nil {
		h.log.Warn("undecodable live event", "subject", subject, "stream_seq", seq, "err", err)
		return
	}
	ev := newJobEvent(head, seq, m.Header.Get(envelope.HeaderTraceparent))
	ev.trace = h.traceOf(m.Header)
	t.deliverStored(ev)
}

// leaveToSweeper records that a lane could not fill a gap on t: the
// sweeper reconciles t on its next tick. t.mu is held.
func (h *hub) leaveToSweeper(t *topic, err error) {
	t.stale.Store(true)
	h.log.Warn("filling a gap from the events stream; left to the sweeper", "topic", t.name, "err", err)
}

// catchUp delivers the events stored on filter from seq from up to, not
// including, upTo (0: to the end of the stream), skipping what the topic
// already handled, in one read bounded by timeout (and ctx). top is the
// highest stream seq read and end whether the read reached the end of the
// stream. It never retries: the caller leaves a failed topic to the
// sweeper, which errors its channels after catchUpAttempts failed sweeps.
// t.mu is held.
func (h *hub) catchUp(ctx context.Context, timeout time.Duration, t *topic, filter string, from, upTo uint64) (top uint64, end bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	end, err = h.stream.readFrom(ctx, filter, from, func(m *jetstream.RawStreamMsg) bool {
		if upTo != 0 && m.Sequence >= upTo {
			return false
		}
		top = max(top, m.Sequence)
		h.deliverRead(t, m)
		return true
	})
	return top, end, err
}

// deliverRead delivers m, read from the stream, unless the topic already
// handled it (live, or by an earlier read). t.mu is held.
func (h *hub) deliverRead(t *topic, m *jetstream.RawStreamMsg) {
	if m.Sequence <= t.floor(m.Subject) {
		return
	}
	late := m.Sequence < t.pos
	t.advance(m.Subject, m.Sequence)
	if ev := h.decode(m); ev != nil {
		ev.late = late
		t.deliverStored(ev)
	}
}
