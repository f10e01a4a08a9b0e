package notifier

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/phoenix"
	"github.com/beamline/beamline/pkg/envelope"
)

// livePrefix is what EVENTS puts before a subject when it re-publishes a
// stored event (streams/events.json: "republish": events.> → live.events.>).
const livePrefix = "live."

func liveSubject(subject string) string { return livePrefix + subject }

// catchUpAttempts bounds how often a failed stream read is retried before
// the topic's channels are errored (about 5 s of backoff in all).
const catchUpAttempts = 8

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

// onLive handles one re-published event; it runs on the topic's lane. The stream seq comes from Nats-Sequence, so the live path
// costs no JetStream request. Nats-Last-Sequence is the stream seq of the
// previous event on the same subject: when it is beyond what this topic
// delivered for that subject, a message was missed and the missing ones are
// read from the stream first. Messages the client library dropped (slow
// consumer: the topic's lane was full) are also noticed by its dropped
// count on the topic's next message; a dropped last event of a job, with no
// next message, is read by the reconciliation sweep (see lane).
func (h *hub) onLive(t *topic, m *nats.Msg) {
	seq, err1 := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	prev, err2 := strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
	subject, ok := strings.CutPrefix(m.Subject, livePrefix)
	if err1 != nil || err2 != nil || !ok || seq == 0 {
		h.s.log.Warn("live event without stream sequence headers", "subject", m.Subject)
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
		if _, _, ok := h.catchUp(t, t.subject, func() uint64 { return from }, 0); !ok {
			return
		}
	}
	t.live = max(t.live, seq)
	floor := t.floor(subject)
	if seq <= floor {
		return // before the topic began, or already read from the stream
	}
	if prev > floor {
		if _, _, ok := h.catchUp(t, subject, func() uint64 { return t.floor(subject) + 1 }, seq); !ok {
			return
		}
	}
	t.advance(subject, seq)
	env, snap, err := envelope.DecodeEvent(m.Data)
	if err != nil {
		h.s.log.Warn("undecodable live event", "subject", subject, "stream_seq", seq, "err", err)
		return
	}
	ev := newJobEvent(env, snap, seq)
	ev.trace = h.s.traceOf(m.Header)
	t.deliverStored(ev)
}

// catchUp delivers the events stored on filter from from() up to, not
// including, upTo (0: to the end of the stream), skipping what the topic
// already handled. top is the highest stream seq read and end whether the
// read reached the end of the stream. A read that keeps failing errors the
// topic's channels (phx_error) so that clients rejoin and replay from their
// last_seq instead of living with a silent gap; ok is then false. t.mu is
// held.
func (h *hub) catchUp(t *topic, filter string, from func() uint64, upTo uint64) (top uint64, end, ok bool) {
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(h.s.ctx, 5*time.Second)
		reachedEnd, err := h.s.readFrom(ctx, filter, from(), func(m *jetstream.RawStreamMsg) bool {
			if upTo != 0 && m.Sequence >= upTo {
				return false
			}
			top = max(top, m.Sequence)
			if m.Sequence <= t.floor(m.Subject) {
				return true
			}
			late := m.Sequence < t.pos
			t.advance(m.Subject, m.Sequence)
			if ev := h.decode(m); ev != nil {
				ev.late = late
				t.deliverStored(ev)
			}
			return true
		})
		cancel()
		if err == nil {
			return top, reachedEnd, true
		}
		if h.s.ctx.Err() != nil {
			return top, false, false
		}
		h.s.log.Warn("reading the events stream", "topic", t.name, "attempt", attempt, "err", err)
		if attempt == catchUpAttempts {
			break
		}
		select {
		case <-h.s.ctx.Done():
			return top, false, false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	h.s.log.Error("cannot read missed events; erroring the topic's channels so clients rejoin and replay", "topic", t.name)
	h.endLocked(t, phoenix.EventError, phoenix.ErrorReason("stream unavailable"))
	return top, false, false
}
