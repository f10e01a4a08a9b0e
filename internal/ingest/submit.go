package ingest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/natsx"
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
	if aerr := s.acquireSlot(); aerr != nil {
		s.reject(w, r, aerr)
		return
	}
	defer s.releaseSlot()

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
	req, aerr := s.checkRequest(body)
	if aerr != nil {
		s.reject(w, r, aerr)
		return
	}
	if req.IdempotencyKey != nil {
		s.reject(w, r, newError(http.StatusBadRequest, CodeInvalidIdempotencyKey, "idempotency_key is a batch item's field; send the Idempotency-Key header"))
		return
	}
	req.IdempotencyKey = &key
	job := newJob(p.User, req)
	ctx := r.Context()
	if key != "" {
		snap, found, aerr := s.keyedExisting(ctx, job)
		if aerr != nil {
			s.reject(w, r, aerr)
			return
		}
		if found {
			s.accepted(w, snap)
			return
		}
	}
	s.publish(ctx, w, r, p, job, req.due)
}

// acquireSlot takes one of the MaxInFlight submission slots (a batch takes
// one, as it is one request), or refuses with 429.
func (s *Service) acquireSlot() *apiError {
	select {
	case s.slots <- struct{}{}:
	default:
		e := newError(http.StatusTooManyRequests, CodeOverloaded, "too many submissions in flight; retry later")
		e.RetryAfter = retryInFlight
		return e
	}
	s.metrics.inflight.Inc()
	return nil
}

func (s *Service) releaseSlot() {
	<-s.slots
	s.metrics.inflight.Dec()
}

// checkRequest is every check of one job request, shared by POST /v1/jobs
// and each item of POST /v1/jobs/batch: the body (decodeSubmit), then
// whether the kind is served here.
func (s *Service) checkRequest(body []byte) (submitRequest, *apiError) {
	req, err := decodeSubmit(body)
	if err != nil {
		var e *apiError
		if !errors.As(err, &e) {
			e = newError(http.StatusBadRequest, CodeInvalidJSON, err.Error())
		}
		return req, e
	}
	if !s.kinds[req.Kind] {
		return req, newError(http.StatusBadRequest, CodeUnknownKind, "kind "+req.Kind+" is not served here")
	}
	if e := req.schedule(time.Now()); e != nil {
		return req, e
	}
	return req, nil
}

// newJob is the job of a checked request by user: its id derived from the
// user and the request's idempotency key (keyedJobID), random without one.
func newJob(user string, req submitRequest) envelope.Job {
	now := time.Now().UTC()
	job := envelope.Job{
		User:      user,
		Kind:      req.Kind,
		Priority:  req.Priority,
		Input:     req.Input,
		CreatedAt: now,
		ExpiresAt: req.expiresAt(now),
	}
	if k := req.key(); k != "" {
		job.ID = keyedJobID(user, k)
	} else {
		job.ID = newJobID()
	}
	return job
}

// keyedExisting answers a keyed submission whose job already exists.
// Past the duplicate window JetStream would take the same id as a new
// message; the job as it is now (stored, or still queued in JOBS) answers a
// late retry instead. When that cannot be read, the retry is refused (503)
// rather than risk running the job twice.
func (s *Service) keyedExisting(ctx context.Context, job envelope.Job) (envelope.Snapshot, bool, *apiError) {
	snap, err := s.existing(ctx, job.ID)
	switch {
	case err == nil:
		s.log.Debug("idempotent retry answered from the job store", "job", job.ID, "user", job.User, "kind", snap.Kind)
		return snap, true, nil
	case !errors.Is(err, jobstore.ErrNotFound):
		s.log.Warn("keyed submission refused: its job could not be looked up", "job", job.ID, "user", job.User, "err", err)
		return snap, false, unavailable()
	}
	return snap, false, nil
}

// publish writes the job to JOBS and answers 202 with its queued snapshot
// once JetStream acknowledged it. That PubAck is the submission's one
// durable write: no snapshot is stored for a queued job, whose state is its
// JOBS message until a processor (or a cancel) writes it, and GET reads it
// there (jobstore.Lookup). A refused job therefore leaves nothing behind.
//
// A job due later (due not zero) is written instead as its schedule message
// in SCHEDULED, still one write; it answers status scheduled.
func (s *Service) publish(ctx context.Context, w http.ResponseWriter, r *http.Request, p auth.Principal, job envelope.Job, due time.Time) {
	log := jobLog{log: s.log, ctx: ctx, job: job.ID, user: p.User, kind: job.Kind}
	msg, stream, aerr := s.jobMsg(ctx, job, due)
	if aerr != nil {
		if aerr.Status >= 500 {
			log.at(slog.LevelError, "building the job message failed", "err", aerr.Message)
		}
		s.reject(w, r, aerr)
		return
	}
	if !s.nc.IsConnected() {
		log.at(slog.LevelWarn, "job refused: NATS is not connected")
		s.reject(w, r, unavailable())
		return
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	msg.Header.Set(jetstream.ExpectedStreamHeader, stream)
	ack, err := natsx.Publish(pctx, s.nc, msg)
	cancel()
	if err != nil {
		aerr := classifyNATS(err)
		log.at(slog.LevelWarn, "job not stored", "err", err, "status", aerr.Status)
		s.reject(w, r, aerr)
		return
	}
	if ack.Duplicate {
		// The same key within the duplicate window: answer with the job
		// stored first, as it is now.
		snap, err := s.existing(context.WithoutCancel(ctx), job.ID)
		if err != nil {
			snap = acceptedSnapshot(job, due)
		}
		log.at(slog.LevelInfo, "duplicate submission", "seq", ack.Sequence)
		s.index(ctx, job, msg.Data) // de-duplicated; repairs an entry a crash left out
		s.accepted(w, snap)
		return
	}
	s.metrics.submitted.WithLabelValues(job.Kind, string(job.Priority)).Inc()
	log.at(slog.LevelInfo, "job accepted", "priority", string(job.Priority), "seq", ack.Sequence, "stream", stream)
	s.index(ctx, job, msg.Data)
	s.accepted(w, acceptedSnapshot(job, due))
}

// acceptedSnapshot is the snapshot of a job just stored: queued, or
// scheduled when it is due later.
func acceptedSnapshot(job envelope.Job, due time.Time) envelope.Snapshot {
	if due.IsZero() {
		return envelope.NewSnapshot(job)
	}
	return envelope.NewScheduledSnapshot(job, due)
}

// jobMsg is the message that stores a job and the stream it goes to: its
// JOBS message (envelope.NewJobMsg), or for a job due later its schedule
// message in SCHEDULED (envelope.NewScheduledJobMsg); or the answer to give
// when the job cannot be one.
func (s *Service) jobMsg(ctx context.Context, job envelope.Job, due time.Time) (*nats.Msg, string, *apiError) {
	var msg *nats.Msg
	var err error
	stream := streams.Jobs
	if due.IsZero() {
		msg, err = envelope.NewJobMsg(job, s.cfg.Source, telemetry.Traceparent(ctx))
	} else {
		stream = streams.Scheduled
		msg, err = envelope.NewScheduledJobMsg(job, s.cfg.Source, telemetry.Traceparent(ctx), due)
	}
	if err != nil {
		if errors.Is(err, envelope.ErrTooLarge) {
			return nil, "", tooLarge("the job envelope exceeds " + byteSize(envelope.MaxSize))
		}
		return nil, "", newError(http.StatusInternalServerError, CodeInternal, "the job could not be encoded: "+err.Error())
	}
	return msg, stream, nil
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

// existing returns the current snapshot of id (stored, or queued in JOBS);
// jobstore.ErrNotFound when the job is unknown.
func (s *Service) existing(ctx context.Context, id string) (envelope.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	snap, _, err := s.store.Lookup(ctx, id)
	return snap, err
}

func (s *Service) accepted(w http.ResponseWriter, snap envelope.Snapshot) {
	w.Header().Set("Location", "/v1/jobs/"+snap.ID)
	httpx.WriteJSON(w, http.StatusAccepted, snap)
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
	return s.readBodyLimit(w, r, s.cfg.MaxBody)
}

// readBodyLimit reads at most limit bytes.
func (s *Service) readBodyLimit(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *apiError) {
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
