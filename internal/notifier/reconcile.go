package notifier

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/phoenix"
	"github.com/beamline/beamline/pkg/envelope"
)

// Defaults of the reconciliation sweep.
const (
	defaultReconcileEvery = 5 * time.Second
	// maxPerTick bounds the topics one sweep tick reads; the rest stay due
	// and are read on the next ticks.
	maxPerTick = 4096
)

// sweepLoop is the one goroutine that keeps every stream-fed topic
// complete without relying on the live path alone. A re-published event can
// be lost without a trace the live path could see: the stream stored it and
// its leader lost the route before re-publishing, interest was still
// propagating in a cluster, or it was the last event of its subject (a
// job's terminal event) so no later message's Nats-Last-Sequence reveals
// it. Every topic is therefore reconciled about every reconcileEvery
// (spread over the interval, never all at once): it reads what the stream
// stored on its filter after its contiguous watermark and delivers what it
// had not. One EVENTS Info per tick lets every topic whose watermark is
// already at the stream's end skip the read, job topics whose terminal
// event went out are not read at all, and the per-subject positions the
// watermark made redundant are pruned on the same pass (no timer per topic).
//
// A signal on refill (the NATS connection came back: everything
// re-published while it was down is lost) reconciles every topic at once.
func (h *hub) sweepLoop(ctx context.Context, refill <-chan struct{}) {
	every := h.reconcileEvery
	tick := time.NewTicker(min(time.Second, every/5))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-refill:
			if hook := h.beforeRefill; hook != nil {
				hook()
			}
			h.sweep(ctx, true)
		case <-tick.C:
			h.sweep(ctx, false)
		}
	}
}

// sweep reconciles the topics that are due (all of them when all is set).
func (h *hub) sweep(ctx context.Context, all bool) {
	every := h.reconcileEvery
	now := time.Now()
	var due []*topic
	for _, t := range h.streamTopics() {
		select {
		case <-t.ready:
		default:
			continue // still starting
		}
		if t.err != nil {
			continue
		}
		// t.due is the sweeper's alone.
		if t.due.IsZero() {
			t.due = now.Add(rand.N(every)) // spread topics over the interval
		}
		if all || !t.due.After(now) {
			due = append(due, t)
		} else if t.stale.Swap(false) {
			due = append(due, t) // a lane left it a gap to fill
		}
		if !all && len(due) == maxPerTick {
			break
		}
	}
	if len(due) == 0 {
		return
	}
	var last, first uint64
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := h.stream.info(ictx)
	cancel()
	switch {
	case err == nil:
		last, first = info.State.LastSeq, info.State.FirstSeq
	case !all:
		h.log.Warn("reconciling topics: reading the events stream", "err", err)
		return // they stay due
	}
	// Job topics whose watermark is behind: one multi_last request per
	// multiLastChunk of them says which job subjects stored anything the
	// topic has not handled, and only those are read. A topic the live
	// path kept up to date is settled without a read of its own (it was
	// one direct get per topic every interval, 3,000/s with 15,000 joined
	// jobs while events flow, each holding the topic's lock for a round
	// trip).
	var jobs []*topic
	var subjects []string
	if last != 0 {
		rest := due[:0:0]
		for _, t := range due {
			if envelope.IsJobEventSubject(t.subject) && h.behind(t, last) && !t.stale.Load() {
				jobs, subjects = append(jobs, t), append(subjects, t.subject)
			} else {
				rest = append(rest, t)
			}
		}
		due = rest
	}
	if len(jobs) > 0 {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		stored, err := h.stream.lastStreamSeqUpTo(ictx, subjects, last)
		cancel()
		for _, t := range jobs {
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				h.reconcile(ctx, t, last, first) // read it alone
			} else {
				h.settle(ctx, t, stored[t.subject], last, first)
			}
			t.due = time.Now().Add(every)
		}
	}
	for _, t := range due {
		if ctx.Err() != nil {
			return
		}
		h.reconcile(ctx, t, last, first)
		t.due = time.Now().Add(every)
	}
}

// behind reports whether t still needs reconciling against a stream whose
// last seq is last.
func (h *hub) behind(t *topic, last uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.ended && !t.finished && t.mark < last
}

// settle reconciles a job topic given stored, the stream seq of the last
// event on its subject at or below last (0: none), from a multi_last direct
// get. When the topic handled it (the live path delivers each subject's
// events contiguously, checked by Nats-Last-Sequence), nothing is missing
// as far as that answer goes; otherwise the topic is read from the stream
// as reconcile does. The watermark moves only to what the topic handled:
// a direct get may be answered by a lagging replica, so its "nothing after
// that" is no proof that nothing lies in (floor, last] — the topic stays
// behind and is asked again on the next sweep (one multi_last request per
// multiLastChunk topics), and reconcile moves it to last after a
// leader-answered check.
func (h *hub) settle(ctx context.Context, t *topic, stored, last, first uint64) {
	t.mu.Lock()
	if t.ended || t.finished || t.mark >= last {
		t.mu.Unlock()
		return
	}
	if f := t.floor(t.subject); stored <= f {
		t.mark = max(t.mark, min(f, last))
		t.prune(first)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	h.reconcile(ctx, t, last, first)
}

// reconcile delivers what the stream holds on t's filter after its
// watermark and the topic has not delivered, then moves the watermark to
// the end of what it read, and to last (the stream's last seq read
// before; 0: unknown, read anyway) only when the stream's leader confirms
// that nothing on the filter lies between the two. A read that fails is
// retried on the next sweep tick; after catchUpAttempts failures in a row
// the topic's channels are errored so that clients rejoin and replay from
// their last_seq instead of living with a silent gap.
//
// t.mu is not held across the read's round trips (sweepRead): a user
// topic's sweep reads every event since its watermark, hundreds to
// thousands on a busy one, and the topic's live events must not wait for it.
// Only the sweeper moves the watermark, so reading from it unlocked is safe.
func (h *hub) reconcile(ctx context.Context, t *topic, last, first uint64) {
	t.mu.Lock()
	if t.ended || t.finished {
		t.mu.Unlock()
		return
	}
	if last != 0 && t.mark >= last {
		t.prune(first)
		t.mu.Unlock()
		return
	}
	mark := t.mark
	t.mu.Unlock()

	// Everything on the filter from mark+1 up to read is read, in order,
	// as the answering server stored it, once sweepRead returns no error.
	read, stopped, err := h.sweepRead(ctx, t, mark+1)
	if stopped {
		return // the topic ended or finished meanwhile
	}
	readOK := err == nil
	proven := read
	if readOK && last > read {
		var next uint64
		lctx, cancel := context.WithTimeout(ctx, sweepReadTimeout)
		next, err = h.stream.nextOnLeader(lctx, t.subject, read+1)
		cancel()
		switch {
		case err != nil:
		case next == 0 || next > last:
			proven = last
		default:
			// The answer came from a replica that lacks event next: read
			// again on the next tick.
			t.stale.Store(true)
		}
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended || t.finished {
		return
	}
	if readOK {
		t.mark = max(t.mark, proven)
	}
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down
		}
		t.fails++
		h.log.Warn("reconciling a topic: reading the events stream", "topic", t.name, "attempt", t.fails, "err", err)
		if t.fails >= catchUpAttempts {
			h.log.Error("cannot read missed events; erroring the topic's channels so clients rejoin and replay", "topic", t.name)
			h.endLocked(t, phoenix.EventError, phoenix.ErrorReason("stream unavailable"))
			return
		}
		t.stale.Store(true)
		return
	}
	t.fails = 0
	t.prune(first)
}

// sweepRead reads t's filter from seq from to the end of the stream, one
// batch per round trip with t.mu released, and delivers each batch's events
// the topic has not handled (deliverRead) under t.mu; the live path skips
// what it delivers and it skips what the live path delivered meanwhile.
// read is the highest seq read (from-1 when nothing was); stopped reports
// that the topic ended or finished during the read.
func (h *hub) sweepRead(ctx context.Context, t *topic, from uint64) (read uint64, stopped bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, sweepReadTimeout)
	defer cancel()
	read = from - 1
	batch := make([]*jetstream.RawStreamMsg, 0, natsx.DirectBatch)
	for seq := from; ; {
		batch = batch[:0]
		next, more, err := h.stream.readBatch(ctx, t.subject, seq, func(m *jetstream.RawStreamMsg) {
			batch = append(batch, m)
		})
		if err != nil {
			return read, false, err
		}
		if hook := h.sweepBatch; hook != nil {
			hook(t.name)
		}
		t.mu.Lock()
		if t.ended || t.finished {
			t.mu.Unlock()
			return read, true, nil
		}
		for _, m := range batch {
			h.deliverRead(t, m)
			read = max(read, m.Sequence)
		}
		t.mu.Unlock()
		if !more {
			return read, false, nil
		}
		seq = next
	}
}
