package ingest

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/envelope"
)

// get handles GET /v1/jobs/{id}.
func (s *Service) get(w http.ResponseWriter, r *http.Request) {
	_, snap, _, aerr := s.readable(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, snap)
}

// cancel handles DELETE /v1/jobs/{id}: a job not yet terminal becomes
// cancelled (jobstore.Store.Cancel: compare-and-set, the cancelled event,
// and cancel.<user>.<job> tells a processor running it to stop).
func (s *Service) cancel(w http.ResponseWriter, r *http.Request) {
	p, snap, rev, aerr := s.lookup(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	log := s.log.With("job", snap.ID, "user", snap.User, "kind", snap.Kind).With(telemetry.LogAttrs(r.Context())...)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.RequestTimeout)
	defer cancel()
	next, err := s.store.Cancel(ctx, snap, rev, func(msg string, err error) { log.Warn(msg, "seq", snap.Seq, "err", err) })
	switch {
	case errors.Is(err, jobstore.ErrTerminal):
		writeError(w, alreadyTerminal(next))
		return
	case err != nil:
		log.Warn("cancel refused", "seq", snap.Seq, "err", err)
		writeError(w, unavailable())
		return
	}
	if snap.Status == envelope.StatusScheduled {
		s.unschedule(ctx, next) // the cancelled job never runs; its schedule goes too
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
	return s.lookupAs(r, p)
}

// lookupAs is lookup for an authenticated p.
func (s *Service) lookupAs(r *http.Request, p auth.Principal) (auth.Principal, envelope.Snapshot, uint64, *apiError) {
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
	case snap.User != p.User && !p.Admin && p.Share != id:
		return p, snap, 0, newError(http.StatusForbidden, CodeForbidden, "job "+id+" belongs to another user")
	}
	return p, snap, rev, nil
}

func alreadyTerminal(snap envelope.Snapshot) *apiError {
	return newError(http.StatusConflict, CodeAlreadyTerminal,
		"job "+snap.ID+" is already "+string(snap.Status)+" (seq "+strconv.FormatUint(snap.Seq, 10)+")")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
