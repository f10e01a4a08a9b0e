package processor

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/pkg/envelope"
)

// expired settles a job whose expires_at passed before any run started
// (POST /v1/jobs with expires_in_ms), before the run's claim: it stores the terminal status
// expired (compare-and-set over the queued snapshot, as a cancel does),
// then skipTerminal confirms its event and acks. It reports whether it
// settled the delivery. A job already run once is not expired: expiry is
// about jobs that never started. docs/design.md#expiring-jobs
func (p *Processor) expired(ctx context.Context, d *delivery, log *slog.Logger) bool {
	exp := d.job.ExpiresAt
	if exp == nil || time.Now().Before(*exp) {
		return false
	}
	// Only past its expiry does the job cost a read before its claim.
	if err := p.load(ctx, d); err != nil {
		log.Warn("cannot read the job to expire it; will retry", "err", err)
		p.nak(d, p.backoff(d.delivered, nil))
		return true
	}
	if d.snap.Attempt > 0 || d.snap.Status != envelope.StatusQueued {
		return false // started already, or terminal: the usual path settles it
	}
	next, _, err := p.store.ApplyAt(ctx, d.snap, d.rev, envelope.TypeExpired, func(s *envelope.Snapshot) error {
		if s.Attempt > 0 || s.Status != envelope.StatusQueued {
			return errStartedMeanwhile
		}
		s.Status = envelope.StatusExpired
		s.Error = "not started before " + exp.UTC().Format(time.RFC3339Nano)
		return nil
	})
	switch {
	case err == nil, errors.Is(err, jobstore.ErrTerminal), errors.Is(err, jobstore.ErrNotPublished):
		// Stored (skipTerminal publishes a missing event), or another
		// final state came first.
		log.Info("job expired before it started", "expires_at", exp, "status", next.Status)
		p.skipTerminal(ctx, d, next, log)
	case errors.Is(err, errStartedMeanwhile):
		return false
	default:
		log.Warn("expiring the job failed; will retry", "err", err)
		p.nak(d, p.backoff(d.delivered, nil))
	}
	return true
}

var errStartedMeanwhile = errors.New("processor: the job started meanwhile")
