package ingest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// submit handles POST /v1/jobs. The order of the checks is the order of
// their cost: token, media type, an in-flight slot, then the body. Nothing
// is written anywhere before every check passed; 202 is sent only after
// JetStream acknowledged the job.
func (s *Service) submit(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		s.reject(w, r, aerr)
		return
	}
	if aerr := checkJSON(r); aerr != nil {
		s.reject(w, r, aerr)
		return
	}
	select {
	case s.slots <- struct{}{}:
	default:
		e := newError(http.StatusTooManyRequests, CodeOverloaded, "too many submissions in flight; retry later")
		e.RetryAfter = retryInFlight
		s.reject(w, r, e)
		return
	}
	s.metrics.inflight.Inc()
	defer func() {
		<-s.slots
		s.metrics.inflight.Dec()
	}()

	key, aerr := idempotencyKey(r)
	if aerr != nil {
		s.reject(w, r, aerr)
		return
	}
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		s.reject(w, r, aerr)
		return
	}
	req, err := decodeSubmit(body)
	if err != nil {
		var e *apiError
		if !errors.As(err, &e) {
			e = newError(http.StatusBadRequest, CodeInvalidJSON, err.Error())
		}
		s.reject(w, r, e)
		return
	}
	if !s.kinds[req.Kind] {
		s.reject(w, r, newError(http.StatusBadRequest, CodeUnknownKind, "kind "+req.Kind+" is not served here"))
		return
	}

	job := envelope.Job{
		User:      p.User,
		Kind:      req.Kind,
		Priority:  req.Priority,
		Input:     req.Input,
		CreatedAt: time.Now().UTC(),
	}
	ctx := r.Context()
	if key != "" {
		job.ID = keyedJobID(p.User, key)
		// Past the duplicate window JetStream would take the same id as a new
		// message; the stored snapshot answers a late retry instead.
		if snap, ok := s.existing(ctx, job.ID); ok {
			s.log.Debug("idempotent retry answered from the job store", "job", job.ID, "user", p.User, "kind", snap.Kind)
			s.accepted(w, snap)
			return
		}
	} else {
		job.ID = newJobID()
	}
	s.publish(ctx, w, r, p, job, key != "")
}

// created is the outcome of writing a queued snapshot.
type created struct {
	snap envelope.Snapshot
	rev  uint64 // its KV revision, when err is nil
	err  error
}

// cleanupTimeout bounds the deletion of a refused job's queued snapshot. It
// runs under its own context, created after the publish returned: the
// request's deadline has usually passed by then (a publish that timed out
// used all of it).
const cleanupTimeout = 2 * time.Second

// publish writes the job to JOBS and its queued snapshot to job_status and
// answers 202 once JetStream acknowledged the job.
//
// A job with a fresh random id (no Idempotency-Key) has its snapshot written
// at the same time as the job rather than after the PubAck: one round trip
// of latency instead of two. Nobody knows that id before the 202, so when
// the job is refused the snapshot is deleted again and nothing saw it. A
// keyed job keeps the sequential order, since a retry with the same key
// would find a snapshot written ahead of a refused job.
func (s *Service) publish(ctx context.Context, w http.ResponseWriter, r *http.Request, p auth.Principal, job envelope.Job, keyed bool) {
	log := jobLog{log: s.log, ctx: ctx, job: job.ID, user: p.User, kind: job.Kind}
	msg, err := envelope.NewJobMsg(job, s.cfg.Source, telemetry.Traceparent(ctx))
	if err != nil {
		if errors.Is(err, envelope.ErrTooLarge) {
			s.reject(w, r, tooLarge("the job envelope exceeds "+byteSize(envelope.MaxSize)))
			return
		}
		log.at(slog.LevelError, "building the job message failed", "err", err)
		s.reject(w, r, newError(http.StatusInternalServerError, CodeInternal, "the job could not be encoded"))
		return
	}
	if !s.nc.IsConnected() {
		log.at(slog.LevelWarn, "job refused: NATS is not connected")
		s.reject(w, r, unavailable())
		return
	}
	// The queued snapshot is written even if the client goes away meanwhile.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer scancel()
	var early chan created
	if !keyed {
		early = make(chan created, 1)
		go func() {
			snap, rev, err := s.store.CreateAt(sctx, job)
			early <- created{snap, rev, err}
		}()
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	ack, err := s.js.PublishMsg(pctx, msg, jetstream.WithExpectStream(streams.Jobs))
	cancel()
	if err != nil {
		if early != nil {
			s.forget(job.ID, <-early, log)
		}
		aerr := classifyNATS(err)
		log.at(slog.LevelWarn, "job not stored", "err", err, "status", aerr.Status)
		s.reject(w, r, aerr)
		return
	}
	if ack.Duplicate {
		snap, ok := s.existing(sctx, job.ID)
		if !ok {
			snap = envelope.NewSnapshot(job)
		}
		log.at(slog.LevelInfo, "duplicate submission", "seq", ack.Sequence)
		s.accepted(w, snap)
		return
	}
	var snap envelope.Snapshot
	if early != nil {
		c := <-early
		snap, err = c.snap, c.err
	} else {
		snap, err = s.store.Create(sctx, job)
	}
	switch {
	case errors.Is(err, jobstore.ErrExists): // a processor was faster
		if cur, ok := s.existing(sctx, job.ID); ok {
			snap = cur
		}
	case err != nil:
		// JOBS holds the job; the processor creates the snapshot from it.
		log.at(slog.LevelWarn, "job accepted but its queued snapshot was not written", "err", err)
	}
	s.metrics.submitted.WithLabelValues(job.Kind, string(job.Priority)).Inc()
	log.at(slog.LevelInfo, "job accepted", "priority", string(job.Priority), "seq", ack.Sequence)
	s.accepted(w, snap)
}

// forget deletes the queued snapshot written ahead of a job whose publish
// failed, so that a refused job leaves nothing behind.
//
// The delete is conditional on the revision the create stored
// (jetstream.LastRevision): it removes the snapshot only if nobody wrote the
// job since. That matters because a failed publish is not always a refusal:
// a timeout or a cancelled request (the client went away) is ambiguous, and
// the message may be in JOBS after all. Both outcomes are then safe:
//
//   - A processor already wrote the job (running, progress, an outcome): the
//     revision moved on, the delete fails with a wrong-revision error and the
//     job's state stays. An unconditional delete would erase it (a finished
//     job would answer GET with 404, a running one would lose its attempt).
//   - Nobody wrote it yet: the delete succeeds. If the message was stored,
//     the processor finds no snapshot when the job is delivered and creates
//     the queued one from the message (load seeds via CreateAt); a processor
//     that read the snapshot just before the delete loses its
//     compare-and-set, Naks, and seeds it on the redelivery. Nothing is
//     lost either way; if the message was not stored, nothing is left.
//
// It runs under a fresh, bounded context: the request's deadline is shared
// with the publish, so after a publish timeout it has already expired and a
// delete under it would never be sent, orphaning the snapshot for the
// bucket's max age.
func (s *Service) forget(id string, c created, log jobLog) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	rev := c.rev
	if c.err != nil {
		if errors.Is(c.err, jobstore.ErrExists) {
			return // not ours: an existing job is never deleted here
		}
		// The create's outcome is unknown (it may have timed out after
		// the server stored it): read back what is there. A queued seq 0
		// snapshot may be ours or one a processor seeded from the
		// message; either is safe to delete conditionally (see above).
		snap, r, err := s.store.Get(ctx, id)
		if err != nil {
			if !errors.Is(err, jobstore.ErrNotFound) {
				log.at(slog.LevelWarn, "refused job's queued snapshot may be left behind", "err", err, "create_err", c.err)
			}
			return
		}
		if snap.Seq != 0 {
			return // a processor has moved it on: the job was stored
		}
		rev = r
	}
	if err := s.kv.Delete(ctx, id, jetstream.LastRevision(rev)); err != nil {
		if jobstore.IsWrongRevision(err) {
			log.at(slog.LevelInfo, "refused job's snapshot kept: a processor wrote it, so the job was stored after all", "rev", rev)
			return
		}
		log.at(slog.LevelWarn, "refused job's queued snapshot not deleted", "err", err, "rev", rev)
	}
}

// jobLog writes records about one job with its job, user and kind (and
// trace) attributes. Unlike slog.Logger.With, which formats them on every
// submission, it puts them together only when a record is written.
type jobLog struct {
	log             *slog.Logger
	ctx             context.Context
	job, user, kind string
}

func (l jobLog) at(lvl slog.Level, msg string, args ...any) {
	if !l.log.Enabled(l.ctx, lvl) {
		return
	}
	trace := telemetry.LogAttrs(l.ctx)
	all := make([]any, 0, 6+len(trace)+len(args))
	all = append(all, "job", l.job, "user", l.user, "kind", l.kind)
	all = append(all, trace...)
	l.log.Log(context.Background(), lvl, msg, append(all, args...)...)
}

// existing returns the stored snapshot of id, if there is one.
func (s *Service) existing(ctx context.Context, id string) (envelope.Snapshot, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	snap, _, err := s.store.Get(ctx, id)
	if err != nil {
		if !errors.Is(err, jobstore.ErrNotFound) {
			s.log.Debug("job store read failed", "job", id, "err", err)
		}
		return envelope.Snapshot{}, false
	}
	return snap, true
}

func (s *Service) accepted(w http.ResponseWriter, snap envelope.Snapshot) {
	w.Header().Set("Location", "/v1/jobs/"+snap.ID)
	writeJSON(w, http.StatusAccepted, snap)
}

// reject writes a refused submission and counts it by reason.
func (s *Service) reject(w http.ResponseWriter, r *http.Request, e *apiError) {
	s.metrics.rejected.WithLabelValues(e.Code).Inc()
	lvl := slog.LevelDebug
	if e.Status >= 500 || e.Status == http.StatusTooManyRequests {
		lvl = slog.LevelWarn
	}
	s.log.Log(r.Context(), lvl, "submission refused", "code", e.Code, "status", e.Status, "reason", e.Message)
	writeError(w, e)
}

// checkJSON requires Content-Type application/json (parameters allowed).
func checkJSON(r *http.Request) *apiError {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Type must be application/json")
	}
	return nil
}

// readBody reads at most MaxBody bytes.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	limit := s.cfg.MaxBody
	if r.ContentLength > limit {
		return nil, tooLarge("the body exceeds " + byteSize(limit))
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge("the body exceeds " + byteSize(limit))
		}
		return nil, newError(http.StatusBadRequest, CodeInvalidJSON, "the body could not be read")
	}
	return b, nil
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return itoa(n>>10) + " KiB"
	}
	return itoa(n) + " bytes"
}
