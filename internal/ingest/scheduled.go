package ingest

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// A job submitted with run_at or delay_ms is stored as its schedule message
// in SCHEDULED (envelope.NewScheduledJobMsg): the server holds it and, when
// it is due, puts the job on schedfire.<job>.<priority>.<kind>, which JOBS
// sources as jobs.<priority>.<kind>.<job>. No timer of ours is involved, so
// a scheduled job survives restarts of every Beamline service.
// docs/design.md#scheduled-jobs

// unschedule removes a cancelled job's schedule message so that it never
// fires. The cancelled snapshot is what guarantees the job never runs (the
// processor settles a job whose snapshot is terminal without running it);
// this only spares the queue a job that would be dropped, so a failure is
// logged, not answered.
func (s *Service) unschedule(ctx context.Context, snap envelope.Snapshot) {
	st, err := s.js.Stream(ctx, streams.Scheduled)
	if err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSubject(envelope.ScheduleSubject(snap.ID)))
	}
	if err != nil {
		s.log.Log(ctx, slog.LevelWarn, "cancelled scheduled job: its schedule was not removed; the processor will drop it when due",
			"job", snap.ID, "user", snap.User, "err", err)
	}
}
