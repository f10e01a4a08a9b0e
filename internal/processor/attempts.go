package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// Attempts count runs, not deliveries.
//
// JetStream's own max_deliver is off (-1 in streams/consumers): a message
// that exhausted it is dropped by JetStream without telling anyone, so a
// process killed during a job's last allowed delivery would leave the job
// "running" forever, with no terminal state
// (docs/design.md#promise-3-exactly-one-terminal-state). The
// processor enforces Config.MaxDeliver itself instead:
//
//   - The attempt number of a run is the stored snapshot's attempt + 1. A
//     redelivery after a crash mid-run finds "running, attempt N" and counts
//     the crashed run as used (its next run is N+1).
//   - A delivery whose attempt number exceeds MaxDeliver is dead-lettered
//     (dead event, DLQ copy, Term) without running the provider. So a crash
//     on the last attempt leads, after ack_wait, to a redelivery that ends
//     the job dead.
//   - Everything that hands a message back without running it — a full
//     waiting room, a shutdown, a breaker that stays open — costs no
//     attempt, however many deliveries it burns. A run interrupted by the
//     end of the shutdown grace gives its attempt back (handBack).
//
// JetStream's delivery count stays as a safety net only: watchDeliveries
// logs a job that is delivered far more often than it runs.

// deliveryWarnGap is how far the delivery count may run ahead of the
// attempt count before it is logged (and then every deliveryWarnGap
// deliveries).
const deliveryWarnGap = 32

// load reads the job's snapshot and revision into d. A job nobody has
// written yet (no snapshot: ingest stores none, and neither does a service
// that publishes straight to JOBS) is its message's queued snapshot at
// jobstore.RevAbsent, and the run's first change creates the snapshot.
//
// A read error is retried, bounded by loadTries with a backoff. The loop
// stops when shutdown starts (the job is not running yet, so it is simply
// handed back).
func (p *Processor) load(ctx context.Context, d *delivery) error {
	if p.stopCtx != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(p.stopCtx, cancel)()
	}
	return loadSnapshot(ctx, d, p.store.Get)
}

// loadTries bounds load's reads.
const loadTries = 5

func loadSnapshot(ctx context.Context, d *delivery,
	get func(context.Context, string) (envelope.Snapshot, uint64, error)) error {
	var err error
	for i := 1; ; i++ {
		d.snap, d.rev, err = get(ctx, d.job.ID)
		if errors.Is(err, jobstore.ErrNotFound) {
			d.snap, d.rev = envelope.NewSnapshot(d.job), jobstore.RevAbsent
			return nil
		}
		if err == nil || i == loadTries || ctx.Err() != nil {
			return err
		}
		if flow.Sleep(ctx, flow.Backoff(i, 50*time.Millisecond, time.Second, 0.2, nil)) != nil {
			return err
		}
	}
}

// watchDeliveries logs a job whose delivery count runs far ahead of its
// attempt count: Naks that cost no attempt are expected (waiting room,
// shutdowns), but thousands of them mean something hands the job back in a
// loop.
func (p *Processor) watchDeliveries(d *delivery, log *slog.Logger) {
	if gap := d.delivered - d.attempt; gap >= deliveryWarnGap && gap%deliveryWarnGap == 0 {
		log.Warn("job delivered far more often than it ran", "delivered", d.delivered)
	}
}

// exhausted ends a job whose attempts are used up before running it: the
// last allowed run crashed (or MaxDeliver was lowered since). dead event,
// DLQ copy, Term.
func (p *Processor) exhausted(ctx context.Context, d *delivery, log *slog.Logger) {
	used := d.snap.Attempt
	reason := fmt.Sprintf("attempt %d of %d never finished (its processor was lost)", used, p.cfg.MaxDeliver)
	if d.snap.Status != envelope.StatusRunning {
		reason = fmt.Sprintf("no attempts left after %d of %d", used, p.cfg.MaxDeliver)
		if d.snap.Error != "" {
			reason += ": " + d.snap.Error
		}
	}
	d.attempt = used
	log.Warn("job dead: attempts used up", "reason", reason, "delivered", d.delivered)
	p.cancelStored(ctx, d, log) // its remote work, if it still runs (handles.go)
	p.die(ctx, d, reason, log)
}

// handBack gives a run that the end of the shutdown grace interrupted back
// to the consumers at once, and its attempt with it: the snapshot goes to
// retrying with the attempt before this one, so the next run (on another
// processor) has this run's number again. If that write fails the Nak still
// happens and the run counts as used.
func (p *Processor) handBack(ctx context.Context, d *delivery, log *slog.Logger) {
	log.Info("job interrupted by shutdown; handing it back")
	_, err := p.apply(ctx, d, envelope.TypeRetrying, func(s *envelope.Snapshot) error {
		if s.Status != envelope.StatusRunning || s.Attempt != d.attempt {
			return errSkip // someone else has moved it on
		}
		s.Status = envelope.StatusRetrying
		s.Attempt = d.attempt - 1
		s.Error = "interrupted by shutdown"
		s.Progress = 0
		return nil
	})
	if err != nil && !errors.Is(err, errSkip) && !errors.Is(err, jobstore.ErrTerminal) {
		log.Warn("attempt not given back; it counts as used", "err", err)
	}
	p.nak(d, 0)
}
