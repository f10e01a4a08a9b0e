package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// A message is acked or termed only once the job's final state is stored
// AND its event is confirmed in EVENTS (and, for a dead job, its DLQ copy in
// DLQ). Whenever that cannot be confirmed — EVENTS or DLQ briefly
// unavailable, a stored change whose publish failed — the message is Nak'd
// with a backoff, and its redelivery finds the job terminal and goes
// through skipTerminal, which publishes what is missing (and only what is
// missing: EnsurePublished, DeadLettered) before letting go of the message.

// finish records the outcome of an attempt, then acks, naks or terms.
func (p *Processor) finish(ctx context.Context, d *delivery, result json.RawMessage, callErr error, log *slog.Logger) {
	switch {
	case d.cancelled.Load():
		// Cancelled through DELETE: the stored snapshot is already
		// cancelled (ingest wrote it before publishing cancel.*). Its
		// event is confirmed like any final event's (ingest may have
		// failed to publish it).
		log.Info("job cancelled while running")
		p.cancelledRun(ctx, d, log)
		return
	case callErr != nil && p.jobBase.Err() != nil:
		// Shutdown grace ran out: give it back at once, and give the
		// attempt back too (attempts.go).
		p.handBack(ctx, d, log)
		return
	}

	if callErr == nil {
		if len(result) > p.cfg.MaxResult {
			p.tooLarge(ctx, d, fmt.Sprintf("result too large: %d bytes, limit %d", len(result), p.cfg.MaxResult), log)
			return
		}
		snap, err := p.apply(ctx, d, envelope.TypeSucceeded, func(s *envelope.Snapshot) error {
			s.Status = envelope.StatusSucceeded
			s.Progress = 100
			s.Result = result
			s.Error = ""
			s.Preview = nil // the result names the finished output
			return nil
		})
		if errors.Is(err, envelope.ErrTooLarge) {
			// Nothing stored: the final event with this result would
			// exceed the envelope budget, on every rerun alike.
			p.tooLarge(ctx, d, fmt.Sprintf("result too large: %d bytes do not fit the job's final event (%d bytes)", len(result), envelope.MaxSize), log)
			return
		}
		p.resolveOutcome(ctx, d, snap, err, outcomeSucceeded, log, p.ack)
		return
	}

	msg := callErr.Error()
	if flow.IsTerminal(callErr) {
		log.Info("job failed terminally", "err", msg)
		p.fail(ctx, d, msg, log)
		return
	}

	if d.attempt >= p.cfg.MaxDeliver {
		log.Warn("job dead: last allowed delivery failed", "err", msg)
		p.die(ctx, d, msg, log)
		return
	}

	delay := p.backoff(d.attempt, callErr)
	log.Info("job will be retried", "err", msg, "delay", delay)
	snap, err := p.apply(ctx, d, envelope.TypeRetrying, func(s *envelope.Snapshot) error {
		s.Status = envelope.StatusRetrying
		s.Error = msg
		return nil
	})
	p.resolveOutcome(ctx, d, snap, err, outcomeRetried, log, func(d *delivery) { p.nak(d, delay) })
}

// fail ends the job failed (terminal, no retry) and terms its message.
func (p *Processor) fail(ctx context.Context, d *delivery, reason string, log *slog.Logger) {
	snap, err := p.apply(ctx, d, envelope.TypeFailed, func(s *envelope.Snapshot) error {
		s.Status = envelope.StatusFailed
		s.Error = reason
		return nil
	})
	p.resolveOutcome(ctx, d, snap, err, outcomeFailed, log, p.term)
}

// tooLarge ends a job whose result cannot be stored: failed, no result.
func (p *Processor) tooLarge(ctx context.Context, d *delivery, reason string, log *slog.Logger) {
	log.Warn("job failed: result too large to store", "reason", reason)
	p.fail(ctx, d, reason, log)
}

// die ends the job dead, copies it to the DLQ and terms its message.
func (p *Processor) die(ctx context.Context, d *delivery, reason string, log *slog.Logger) {
	snap, err := p.apply(ctx, d, envelope.TypeDead, func(s *envelope.Snapshot) error {
		s.Status = envelope.StatusDead
		s.Error = reason
		return nil
	})
	p.resolveOutcome(ctx, d, snap, err, outcomeDead, log, func(d *delivery) {
		if err := p.ensureDeadLettered(ctx, d, reason); err != nil {
			log.Error("DLQ copy of dead job not stored; will retry", "err", err)
			p.nak(d, p.backoff(d.delivered, nil))
			return
		}
		p.term(d)
	})
}

// cancelledRun ends a run stopped by a cancel notice: the stored
// snapshot (cancelled) is read again and confirmed like any final state.
func (p *Processor) cancelledRun(ctx context.Context, d *delivery, log *slog.Logger) {
	// The cancel was stored after this run's last change; if that change's
	// event is still pending, publish it now (late, but not missing).
	if err := p.announcePending(ctx, d); err != nil {
		log.Warn("event of the last change before the cancel not published", "err", err)
	}
	snap, rev, err := p.store.Get(ctx, d.job.ID)
	switch {
	case err != nil:
		log.Error("cannot read the cancelled job; will retry", "err", err)
		p.nak(d, p.backoff(d.delivered, nil))
	case !snap.Status.Terminal():
		// A cancel notice for a job that is not cancelled (not from
		// ingest): the run was cut short; run it again.
		log.Warn("cancel notice for a job that is not terminal; will retry", "status", snap.Status)
		d.snap, d.rev = snap, rev
		p.nak(d, p.backoff(d.attempt, nil))
	default:
		p.skipTerminal(ctx, d, snap, log)
	}
}

// resolveOutcome acts on the result of the outcome write of an attempt: stored and
// announced → the outcome's action; already terminal (cancelled meanwhile)
// → skipTerminal; stored but not announced → counted, then Nak'd (a retry
// with its delay) so the redelivery announces it; not stored → Nak so the
// attempt is redone.
func (p *Processor) resolveOutcome(ctx context.Context, d *delivery, snap envelope.Snapshot, err error,
	outcome string, log *slog.Logger, action func(*delivery)) {
	switch {
	case err == nil:
		if outcome != outcomeRetried {
			p.m.attempts.Observe(float64(d.attempt))
		}
		p.count(d, outcome)
		action(d)
	case errors.Is(err, jobstore.ErrTerminal):
		p.skipTerminal(ctx, d, snap, log)
	case errors.Is(err, jobstore.ErrNotPublished):
		log.Error("outcome stored, its event not published; redelivery publishes it", "outcome", outcome, "err", err)
		if outcome != outcomeRetried {
			p.m.attempts.Observe(float64(d.attempt))
		}
		p.count(d, outcome)
		if outcome == outcomeRetried {
			action(d) // the retry's Nak; its redelivery announces retrying first
			return
		}
		p.nak(d, p.backoff(d.attempt, nil))
	default:
		log.Error("outcome not recorded; will retry", "outcome", outcome, "err", err)
		p.nak(d, p.backoff(d.attempt, nil))
	}
}

// skipTerminal handles a delivery of a job that is already terminal. The
// stored snapshot's event is published if EVENTS lacks it (a crash or a
// failed publish after the KV write; a cancel whose event ingest could not
// publish), a dead job's DLQ copy is stored if it was not (DeadLettered),
// and only then is the message acked (termed, for dead) without running.
// When either cannot be confirmed, the message is Nak'd with a backoff and
// the next delivery tries again: a final event is never given up on. Only
// what is missing is published, so a redelivery after the duplicate window
// announces nothing twice.
func (p *Processor) skipTerminal(ctx context.Context, d *delivery, snap envelope.Snapshot, log *slog.Logger) {
	if err := p.ensurePublished(ctx, snap, log); err != nil {
		log.Warn("final event not confirmed published; will retry", "status", snap.Status, "seq", snap.Seq, "err", err)
		p.nak(d, p.backoff(d.delivered, nil))
		return
	}
	switch snap.Status {
	case envelope.StatusCancelled:
		p.count(d, outcomeCancelled)
	case envelope.StatusDead:
		d.attempt = snap.Attempt
		if err := p.ensureDeadLettered(ctx, d, snap.Error); err != nil {
			log.Error("DLQ copy of dead job not stored; will retry", "err", err)
			p.nak(d, p.backoff(d.delivered, nil))
			return
		}
		p.term(d)
		return
	}
	p.ack(d)
}

// ensurePublished is jobstore.EnsurePublished with a gap — events missing
// before snap's, which nobody can publish any more — logged rather than
// retried: retrying cannot bring them back, and holding snap's event back
// would only widen the gap.
func (p *Processor) ensurePublished(ctx context.Context, snap envelope.Snapshot, log *slog.Logger) error {
	err := p.store.EnsurePublished(ctx, snap)
	if errors.Is(err, jobstore.ErrSeqGap) {
		log.Error("job's events have a gap that cannot be filled", "seq", snap.Seq, "err", err)
		return nil
	}
	return err
}

// apply is jobstore.ApplyAt at the revision the delivery carries (d.snap,
// d.rev, updated whenever the change is stored), with a few quick retries
// on infrastructure errors. A change stored without its event
// (ErrNotPublished) is not applied again: its snapshot is published again.
// Errors of the change itself (errSkip, envelope.ErrTooLarge) are returned
// at once.
func (p *Processor) apply(ctx context.Context, d *delivery, t envelope.Type, fn jobstore.Mutation) (envelope.Snapshot, error) {
	ctx, span := p.startSpan(ctx, "job store write", attribute.String("beamline.event", t.Short()))
	defer span.End()
	fn = p.withRemoteStats(d, fn) // telemetry.go
	snap, rev, err := p.applyAt(ctx, d, t, fn)
	for i := 1; ; i++ {
		if err == nil || errors.Is(err, jobstore.ErrNotPublished) {
			d.snap, d.rev = snap, rev
		}
		if err != nil && !errors.Is(err, jobstore.ErrTerminal) {
			telemetry.RecordError(span, err)
		}
		if err == nil || errors.Is(err, jobstore.ErrTerminal) || errors.Is(err, errSkip) ||
			errors.Is(err, errAttemptMoved) || errors.Is(err, envelope.ErrTooLarge) || i == 5 || ctx.Err() != nil {
			return snap, err
		}
		if flow.Sleep(ctx, flow.Backoff(i, 50*time.Millisecond, time.Second, 0.2, nil)) != nil {
			return snap, err
		}
		if errors.Is(err, jobstore.ErrNotPublished) {
			if perr := p.store.Publish(ctx, t, snap); perr != nil {
				err = &jobstore.NotPublishedError{Snapshot: snap, Rev: rev, Err: perr}
			} else {
				err = nil
			}
			continue
		}
		snap, rev, err = p.applyAt(ctx, d, t, fn)
	}
}

// applyAt is one try of apply: the pending announcement of the previous
// change first (progress.go), then the change at d's revision.
func (p *Processor) applyAt(ctx context.Context, d *delivery, t envelope.Type, fn jobstore.Mutation) (envelope.Snapshot, uint64, error) {
	if err := p.announcePending(ctx, d); err != nil {
		return d.snap, d.rev, err
	}
	return p.store.ApplyAt(ctx, d.snap, d.rev, t, fn)
}
