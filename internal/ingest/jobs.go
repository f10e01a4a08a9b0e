package ingest

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/envelope"
)

// get handles GET /v1/jobs/{id}.
func (s *Service) get(w http.ResponseWriter, r *http.Request) {
	_, snap, _, aerr := s.lookup(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, snap)
}

// cancel handles DELETE /v1/jobs/{id}: a job not yet terminal becomes
// cancelled (compare-and-set, then the cancelled event), and
// cancel.<user>.<job> tells a processor running it to stop.
func (s *Service) cancel(w http.ResponseWriter, r *http.Request) {
	p, snap, rev, aerr := s.lookup(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	log := s.log.With("job", snap.ID, "user", snap.User, "kind", snap.Kind).With(telemetry.LogAttrs(r.Context())...)
	if snap.Status.Terminal() {
		writeError(w, alreadyTerminal(snap))
		return
	}
	ctx := r.Context()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	// Whoever writes seq N+1 makes sure seq N's event is in EVENTS: the
	// processor that stored N may have died, or EVENTS refused its event,
	// and once the cancel is stored over it nobody could publish N any
	// more. While it cannot be published, the cancel is refused (503).
	switch err := s.store.EnsurePublished(ctx, snap); {
	case errors.Is(err, jobstore.ErrSeqGap):
		log.Error("job's events have a gap that cannot be filled", "seq", snap.Seq, "err", err)
	case err != nil:
		log.Warn("cancel refused: the job's last change is not announced", "seq", snap.Seq, "err", err)
		writeError(w, unavailable())
		return
	}
	// At the revision read (RevAbsent for a job only in JOBS: the cancel
	// creates its snapshot); a change made since is read again (and its
	// event made sure of, jobstore.ErrUnannounced otherwise).
	next, _, err := s.store.ApplyAt(ctx, snap, rev, envelope.TypeCancelled, func(sn *envelope.Snapshot) error {
		sn.Status = envelope.StatusCancelled
		return nil
	})
	switch {
	case errors.Is(err, jobstore.ErrTerminal):
		writeError(w, alreadyTerminal(next))
		return
	case errors.Is(err, jobstore.ErrNotPublished):
		// Stored, but the event was not published: publish it again (the
		// event id de-duplicates) and go on. The KV holds the truth, so the
		// answer is 200 either way; if this publish fails too, the
		// processor publishes the event: a cancelled job's message is still
		// in JOBS (only terminal jobs are acked), and the processor lets go
		// of it — after the cancel notice stops its run, or when it is
		// delivered later — only once EVENTS holds the job's final event
		// (processor skipTerminal / jobstore.EnsurePublished).
		if perr := s.store.Publish(ctx, envelope.TypeCancelled, next); perr != nil {
			log.Warn("job cancelled but its event was not published; the processor will publish it", "err", perr)
		}
	case err != nil:
		log.Warn("cancel failed", "err", err)
		writeError(w, unavailable())
		return
	}
	if snap.Status == envelope.StatusScheduled {
		s.unschedule(ctx, next)
	}
	msg := nats.NewMsg(envelope.CancelSubject(next.User, next.ID))
	if tp := telemetry.Traceparent(ctx); tp != "" {
		msg.Header.Set(envelope.HeaderTraceparent, tp)
	}
	if err := s.nc.PublishMsg(msg); err != nil {
		log.Warn("cancel notice not published", "err", err)
	}
	log.Info("job cancelled", "by", p.User, "seq", next.Seq)
	httpx.WriteJSON(w, http.StatusOK, next)
}

// lookup authenticates, validates the path id and loads the job the caller
// may see (its owner's, or any for an admin), with its revision: stored in
// job_status, or queued in JOBS at jobstore.RevAbsent.
func (s *Service) lookup(r *http.Request) (auth.Principal, envelope.Snapshot, uint64, *apiError) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		return p, envelope.Snapshot{}, 0, aerr
	}
	id := r.PathValue("id")
	if err := envelope.ValidateID("id", id); err != nil {
		return p, envelope.Snapshot{}, 0, newError(http.StatusBadRequest, CodeInvalidID, fieldMessage(err))
	}
	if !s.nc.IsConnected() {
		return p, envelope.Snapshot{}, 0, unavailable()
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	snap, rev, err := s.store.Lookup(ctx, id)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		return p, snap, 0, newError(http.StatusNotFound, CodeNotFound, "no job "+id)
	case err != nil:
		s.log.Warn("job store read failed", "job", id, "user", p.User, "err", err)
		return p, snap, 0, unavailable()
	case snap.User != p.User && !p.Admin:
		return p, snap, 0, newError(http.StatusForbidden, CodeForbidden, "job "+id+" belongs to another user")
	}
	return p, snap, rev, nil
}

func alreadyTerminal(snap envelope.Snapshot) *apiError {
	return newError(http.StatusConflict, CodeAlreadyTerminal,
		"job "+snap.ID+" is already "+string(snap.Status)+" (seq "+strconv.FormatUint(snap.Seq, 10)+")")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
