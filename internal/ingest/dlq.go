package ingest

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// Bounds of the DLQ endpoints.
const (
	DefaultDLQLimit = 100
	MaxDLQLimit     = 1000
	// maxDLQScan bounds the DLQ messages one request reads; past it the
	// answer says truncated and the caller narrows since/until.
	maxDLQScan = 100000
)

// dlqFilter selects dead jobs: by kind, user, a case-insensitive piece of
// the reason, and when they died (the DLQ message's time, since ≤ t <
// until), at most limit of them, oldest first.
type dlqFilter struct {
	Kind   string     `json:"kind,omitempty"`
	User   string     `json:"user,omitempty"`
	Reason string     `json:"reason,omitempty"`
	Since  *time.Time `json:"since,omitempty"`
	Until  *time.Time `json:"until,omitempty"`
	Limit  int        `json:"limit,omitempty"`
}

// check validates f and fills the default limit.
func (f *dlqFilter) check() *apiError {
	if f.Kind != "" {
		if err := envelope.ValidateKind(f.Kind); err != nil {
			return newError(http.StatusBadRequest, CodeInvalidKind, fieldMessage(err))
		}
	}
	if f.User != "" {
		if err := envelope.ValidateID("user", f.User); err != nil {
			return newError(http.StatusBadRequest, CodeInvalidQuery, fieldMessage(err))
		}
	}
	if len(f.Reason) > 1024 {
		return newError(http.StatusBadRequest, CodeInvalidQuery, "reason: at most 1024 bytes")
	}
	if f.Since != nil && f.Until != nil && !f.Until.After(*f.Since) {
		return newError(http.StatusBadRequest, CodeInvalidQuery, "until must be after since")
	}
	switch {
	case f.Limit == 0:
		f.Limit = DefaultDLQLimit
	case f.Limit < 0 || f.Limit > MaxDLQLimit:
		return newError(http.StatusBadRequest, CodeInvalidQuery, "limit must be 1 to "+strconv.Itoa(MaxDLQLimit))
	}
	return nil
}

// dlqFilterOf reads the filter from GET /v1/admin/dlq's query.
func dlqFilterOf(q url.Values) (dlqFilter, *apiError) {
	var f dlqFilter
	for k, v := range q {
		if len(v) != 1 {
			return f, newError(http.StatusBadRequest, CodeInvalidQuery, k+" must be given once")
		}
		val := v[0]
		switch k {
		case "kind":
			f.Kind = val
		case "user":
			f.User = val
		case "reason":
			f.Reason = val
		case "since", "until":
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return f, newError(http.StatusBadRequest, CodeInvalidQuery, k+" must be an RFC 3339 time")
			}
			if k == "since" {
				f.Since = &t
			} else {
				f.Until = &t
			}
		case "limit":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return f, newError(http.StatusBadRequest, CodeInvalidQuery, "limit must be 1 to "+strconv.Itoa(MaxDLQLimit))
			}
			f.Limit = n
		default:
			return f, newError(http.StatusBadRequest, CodeInvalidQuery, "unknown query parameter "+strconv.Quote(k))
		}
	}
	return f, f.check()
}

// deadJob is one DLQ entry as the API shows it.
type deadJob struct {
	ID       string            `json:"id"`
	User     string            `json:"user"`
	Kind     string            `json:"kind"`
	Priority envelope.Priority `json:"priority"`
	Reason   string            `json:"reason"`
	Attempts int               `json:"attempts"`
	// Error is the job's last error as its snapshot holds it.
	Error     string    `json:"error,omitempty"`
	DiedAt    time.Time `json:"died_at"`
	DLQSeq    uint64    `json:"dlq_seq"`
	CreatedAt time.Time `json:"created_at"`

	job envelope.Job
}

type dlqList struct {
	Jobs []deadJob `json:"jobs"`
	// Truncated: the scan stopped at its bound before the end of the DLQ.
	Truncated bool `json:"truncated,omitempty"`
}

// redriveResult is POST /v1/admin/dlq/redrive's answer.
type redriveResult struct {
	Matched  int `json:"matched"`
	Redriven int `json:"redriven"`
	// Reruns are the new jobs, in the DLQ's order.
	Reruns []envelope.Snapshot `json:"reruns"`
	// Failed are the dead jobs whose rerun was not stored (they stay in
	// the DLQ), with why.
	Failed    []redriveFailure `json:"failed,omitempty"`
	Truncated bool             `json:"truncated,omitempty"`
}

type redriveFailure struct {
	ID    string            `json:"id"`
	Error httpx.ErrorDetail `json:"error"`
}

// admin authenticates an admin token (403 for any other).
func (s *Service) admin(r *http.Request) (auth.Principal, *apiError) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		return p, aerr
	}
	if !p.Admin {
		return p, newError(http.StatusForbidden, CodeForbidden, "admin only")
	}
	return p, nil
}

// dlq handles GET /v1/admin/dlq: dead jobs matching the query's filter,
// oldest first, with their reason, attempts and last error.
func (s *Service) dlq(w http.ResponseWriter, r *http.Request) {
	if _, aerr := s.admin(r); aerr != nil {
		writeError(w, aerr)
		return
	}
	f, aerr := dlqFilterOf(r.URL.Query())
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	jobs, truncated, err := s.scanDLQ(ctx, f)
	if err != nil {
		s.log.Warn("reading the DLQ failed", "err", err)
		writeError(w, unavailable())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, dlqList{Jobs: jobs, Truncated: truncated})
}

// redrive handles POST /v1/admin/dlq/redrive: every dead job matching the
// body's filter is rerun (the rerun of POST /v1/jobs/{id}/rerun: same id,
// so a redrive and a rerun of the same job make one job); a DLQ entry is
// deleted only once its rerun is stored. Nothing matching is 0, not an
// error.
func (s *Service) redrive(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.admin(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := checkJSON(r); aerr != nil {
		writeError(w, aerr)
		return
	}
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var f dlqFilter
	if aerr := decodeStrict(body, &f, "filter"); aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := f.check(); aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx := r.Context()
	sctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	dead, truncated, err := s.scanDLQ(sctx, f)
	cancel()
	if err != nil {
		s.log.Warn("reading the DLQ failed", "err", err)
		writeError(w, unavailable())
		return
	}
	res := redriveResult{Matched: len(dead), Reruns: []envelope.Snapshot{}, Truncated: truncated}
	if len(dead) == 0 {
		httpx.WriteJSON(w, http.StatusOK, res)
		return
	}
	// The reruns, published together; a keyed retry's existing rerun
	// (redriven before, its DLQ delete lost) answers for itself.
	b := s.newBatchPub(ctx, len(dead), false)
	for i, d := range dead {
		b.jobs[i], b.keyed[i] = rerunJob(d.job), true // its entry is its own, as a rerun's
		snap, found, aerr := s.keyedExisting(ctx, b.jobs[i])
		switch {
		case aerr != nil:
			b.items[i] = refusedItem(aerr)
		case found:
			b.items[i] = acceptedItem(snap)
		default:
			b.publish(i)
		}
	}
	b.await()
	items := b.items

	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	st, serr := s.js.Stream(dctx, streams.DLQ)
	for i, it := range items {
		if it.Job == nil {
			res.Failed = append(res.Failed, redriveFailure{ID: dead[i].ID, Error: *it.Error})
			continue
		}
		res.Redriven++
		res.Reruns = append(res.Reruns, *it.Job)
		// Stored: now it may leave the DLQ. A failed delete leaves it
		// there; redriving it again finds its rerun and creates none.
		err := serr
		if err == nil {
			err = st.DeleteMsg(dctx, dead[i].DLQSeq)
		}
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			s.log.Warn("redriven job left in the DLQ: delete failed", "job", dead[i].ID, "dlq_seq", dead[i].DLQSeq, "err", err)
		}
	}
	s.log.Info("DLQ redrive", "by", p.User, "matched", res.Matched, "redriven", res.Redriven, "failed", len(res.Failed))
	httpx.WriteJSON(w, http.StatusOK, res)
}

// scanDLQ reads the DLQ from since (by time) and returns the entries
// matching f, up to f.Limit, with their snapshots' last errors.
func (s *Service) scanDLQ(ctx context.Context, f dlqFilter) ([]deadJob, bool, error) {
	subject := envelope.DLQSubject("*")
	if f.Kind != "" {
		subject = envelope.DLQSubject(f.Kind)
	}
	reason := strings.ToLower(f.Reason)
	rd := natsx.NewDirectReader(s.js, streams.DLQ)
	req := natsx.DirectGet{Seq: 1, NextFor: subject, Batch: natsx.DirectBatch, MaxBytes: natsx.DirectMaxBytes}
	if f.Since != nil {
		req.Seq, req.StartTime = 0, f.Since
	}
	var out []deadJob
	scanned := 0
	stop := false
	for !stop && scanned < maxDLQScan {
		got := 0
		pending, _, err := rd.Get(ctx, req, func(m *jetstream.RawStreamMsg) bool {
			got++
			req.Seq, req.StartTime = m.Sequence+1, nil
			if f.Until != nil && !m.Time.Before(*f.Until) {
				stop = true
				return false
			}
			_, job, err := envelope.DecodeJob(m.Data)
			if err != nil { // not a job envelope: nothing to rerun
				return true
			}
			why := m.Header.Get(envelope.HeaderDeadReason)
			if (f.User != "" && job.User != f.User) || (reason != "" && !strings.Contains(strings.ToLower(why), reason)) {
				return true
			}
			attempts, _ := strconv.Atoi(m.Header.Get(envelope.HeaderAttempts))
			out = append(out, deadJob{ID: job.ID, User: job.User, Kind: job.Kind, Priority: job.Priority, Reason: why,
				Attempts: attempts, DiedAt: m.Time, DLQSeq: m.Sequence, CreatedAt: job.CreatedAt, job: job})
			if len(out) == f.Limit {
				stop = true
				return false
			}
			return true
		})
		if err != nil {
			return nil, false, err
		}
		scanned += got
		if got == 0 || pending == 0 {
			break
		}
	}
	entries := make([]indexEntry, len(out))
	for i, d := range out {
		entries[i] = indexEntry{id: d.ID}
	}
	snaps, err := s.snapshotsOf(ctx, entries)
	if err != nil {
		return nil, false, err
	}
	for i := range out {
		out[i].Error = snaps[out[i].ID].Error
	}
	if out == nil {
		out = []deadJob{}
	}
	return out, !stop && scanned >= maxDLQScan, nil
}
