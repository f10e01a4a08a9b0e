package jobstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/pkg/envelope"
)

// ErrCancelUnavailable: nothing was cancelled because the job's last
// change could not be announced or the store could not be written; retry
// later.
var ErrCancelUnavailable = errors.New("jobstore: cancel not possible now")

// Cancel cancels the job snap, read at revision rev (RevAbsent for a job
// only in JOBS): the cancelled snapshot is stored (compare-and-set), its
// event published, and cancel.<user>.<job> tells a processor running the
// job to stop. Ingest's DELETE /v1/jobs/{id} and the notifier's cancel
// push both come here. It returns the cancelled snapshot; ErrTerminal with
// the terminal snapshot when the job ended first; ErrCancelUnavailable
// (wrapping the cause) when nothing was stored. warn, when set, hears of
// what did not stop the cancel: a gap in the job's events, the event or
// the notice not published.
func (s *Store) Cancel(ctx context.Context, snap envelope.Snapshot, rev uint64, warn func(msg string, err error)) (envelope.Snapshot, error) {
	if warn == nil {
		warn = func(string, error) {}
	}
	if snap.Status.Terminal() {
		return snap, ErrTerminal
	}
	// Whoever writes seq N+1 makes sure seq N's event is in EVENTS: the
	// processor that stored N may have died, or EVENTS refused its event,
	// and once the cancel is stored over it nobody could publish N any
	// more. While it cannot be published, the cancel is refused.
	switch err := s.EnsurePublished(ctx, snap); {
	case errors.Is(err, ErrSeqGap):
		warn("job's events have a gap that cannot be filled", err)
	case err != nil:
		return snap, fmt.Errorf("%w: the job's last change is not announced: %w", ErrCancelUnavailable, err)
	}
	// At the revision read; a change made since is read again (and its
	// event made sure of, ErrUnannounced otherwise).
	next, _, err := s.ApplyAt(ctx, snap, rev, envelope.TypeCancelled, func(sn *envelope.Snapshot) error {
		sn.Status = envelope.StatusCancelled
		return nil
	})
	switch {
	case errors.Is(err, ErrTerminal):
		return next, ErrTerminal
	case errors.Is(err, ErrNotPublished):
		// Stored, but the event was not published: publish it again (the
		// event id de-duplicates) and go on. The KV holds the truth, so
		// the cancel stands either way; if this publish fails too, the
		// processor publishes the event: a cancelled job's message is
		// still in JOBS (only terminal jobs are acked), and the processor
		// lets go of it — after the cancel notice stops its run, or when
		// it is delivered later — only once EVENTS holds the job's final
		// event (processor skipTerminal / EnsurePublished).
		if perr := s.Publish(ctx, envelope.TypeCancelled, next); perr != nil {
			warn("job cancelled but its event was not published; the processor will publish it", perr)
		}
	case err != nil:
		return next, fmt.Errorf("%w: %w", ErrCancelUnavailable, err)
	}
	msg := nats.NewMsg(envelope.CancelSubject(next.User, next.ID))
	if s.cfg.Traceparent != nil {
		if tp := s.cfg.Traceparent(ctx); tp != "" {
			msg.Header.Set(envelope.HeaderTraceparent, tp)
		}
	}
	if err := s.js.Conn().PublishMsg(msg); err != nil {
		warn("cancel notice not published", err)
	}
	return next, nil
}
