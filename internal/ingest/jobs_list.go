package ingest

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// Bounds of GET /v1/jobs.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
	// maxListScan bounds the index entries one GET reads when a status
	// filter leaves pages short: the answer then holds what matched so far
	// and a cursor to go on from.
	maxListScan = 2000
	// maxKindsPerUser bounds the subjects of a user's index (one per kind)
	// that one request reads the last entries of; the server answers at
	// most 1,024.
	maxKindsPerUser = 1024
)

// listQuery is GET /v1/jobs's query, checked.
type listQuery struct {
	user   string
	kind   string
	status envelope.Status
	limit  int
	before uint64 // JOBINDEX seq the page ends below; 0: the newest
}

// listResponse is GET /v1/jobs's answer: the jobs newest first, and the
// cursor of the next (older) page when there may be one.
type listResponse struct {
	Jobs       []envelope.Snapshot `json:"jobs"`
	NextCursor string              `json:"next_cursor,omitempty"`
}

// parseListQuery checks the query of GET /v1/jobs. user is the caller's
// own unless an admin names another.
func parseListQuery(q url.Values, self string, admin bool) (listQuery, *apiError) {
	lq := listQuery{user: self, limit: DefaultListLimit}
	for k, v := range q {
		switch k {
		case "user", "kind", "status", "limit", "cursor":
			if len(v) != 1 {
				return lq, newError(http.StatusBadRequest, CodeInvalidQuery, k+" must be given once")
			}
		default:
			return lq, newError(http.StatusBadRequest, CodeInvalidQuery, "unknown query parameter "+strconv.Quote(k))
		}
	}
	if u := q.Get("user"); u != "" && u != self {
		if err := envelope.ValidateID("user", u); err != nil {
			return lq, newError(http.StatusBadRequest, CodeInvalidQuery, fieldMessage(err))
		}
		if !admin {
			return lq, newError(http.StatusForbidden, CodeForbidden, "only an admin may list another user's jobs")
		}
		lq.user = u
	}
	if k := q.Get("kind"); k != "" {
		if err := envelope.ValidateKind(k); err != nil {
			return lq, newError(http.StatusBadRequest, CodeInvalidKind, fieldMessage(err))
		}
		lq.kind = k
	}
	if st := q.Get("status"); st != "" {
		if !envelope.Status(st).Valid() {
			return lq, newError(http.StatusBadRequest, CodeInvalidQuery, "status: unknown status "+strconv.Quote(st))
		}
		lq.status = envelope.Status(st)
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxListLimit {
			return lq, newError(http.StatusBadRequest, CodeInvalidQuery, "limit must be 1 to "+strconv.Itoa(MaxListLimit))
		}
		lq.limit = n
	}
	if c := q.Get("cursor"); c != "" {
		n, err := strconv.ParseUint(c, 10, 64)
		if err != nil || n < 2 {
			return lq, newError(http.StatusBadRequest, CodeInvalidCursor, "cursor is not one this API gave")
		}
		lq.before = n
	}
	return lq, nil
}

// list handles GET /v1/jobs: the caller's jobs (an admin's: user='s),
// newest first, from JOBINDEX; each job as it is now (its snapshot, or its
// queued message), so status= filters on the current status.
func (s *Service) list(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	lq, aerr := parseListQuery(r.URL.Query(), p.User, p.Admin)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if !s.nc.IsConnected() {
		writeError(w, unavailable())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.listJobs(ctx, lq)
	if err != nil {
		s.log.Warn("listing jobs failed", "user", lq.user, "err", err)
		writeError(w, unavailable())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
}

// listJobs reads pages of index entries newest first until limit jobs
// matched, the index is exhausted or maxListScan entries were read.
func (s *Service) listJobs(ctx context.Context, lq listQuery) (listResponse, error) {
	filter := envelope.UserIndexFilter(lq.user)
	if lq.kind != "" {
		filter = envelope.IndexSubject(lq.user, lq.kind)
	}
	ix := jobIndex{r: natsx.NewDirectReader(s.js, streams.JobIndex), filter: filter}
	resp := listResponse{Jobs: []envelope.Snapshot{}}
	before := lq.before
	if before == 0 {
		last, err := ix.last(ctx)
		if err != nil || last == 0 {
			return resp, err
		}
		before = last + 1
	}
	scanned := 0
	for {
		want := lq.limit - len(resp.Jobs)
		if lq.status != "" {
			want = max(want, min(lq.limit*4, MaxListLimit)) // most may not match
		}
		entries, older, err := ix.pageBefore(ctx, before, want)
		if err != nil {
			return resp, err
		}
		scanned += len(entries)
		snaps, err := s.snapshotsOf(ctx, entries)
		if err != nil {
			return resp, err
		}
		for i, e := range entries {
			snap, ok := snaps[e.id]
			if !ok || (lq.status != "" && snap.Status != lq.status) {
				continue
			}
			resp.Jobs = append(resp.Jobs, snap)
			if len(resp.Jobs) == lq.limit {
				if i < len(entries)-1 || older {
					resp.NextCursor = strconv.FormatUint(e.seq, 10)
				}
				return resp, nil
			}
		}
		if !older || len(entries) == 0 {
			return resp, nil
		}
		before = entries[len(entries)-1].seq
		if scanned >= maxListScan {
			resp.NextCursor = strconv.FormatUint(before, 10)
			return resp, nil
		}
	}
}

// indexEntry is one JOBINDEX message: a job and where it is in the stream.
type indexEntry struct {
	seq uint64
	id  string
}

// jobIndex reads one filter (a user's, or a user's and kind's) of JOBINDEX.
//
// Direct gets read forward only, so a page of the newest n entries below
// seq C is found by counting: count(X), the entries at or after X, is one
// direct get of batch 1 (the first entry at or after X, and the server's
// count of those after it). The page starts at the largest X with
// count(X) - count(C) >= n, found by galloping down from C and then
// bisecting; then one batched direct get reads it. The cost grows with the
// logarithm of how far back the page lies in the stream, never with how
// many jobs the user has. docs/design.md#listing-a-users-jobs
type jobIndex struct {
	r      *natsx.DirectReader
	filter string
}

// last is the stream seq of the newest entry, 0 when there is none: the
// newest of the last entries of each of the filter's subjects (one per
// kind), in one batched request.
func (ix jobIndex) last(ctx context.Context) (uint64, error) {
	var seq uint64
	_, _, err := ix.r.Get(ctx, natsx.DirectGet{MultiLast: []string{ix.filter}, Batch: maxKindsPerUser}, func(m *jetstream.RawStreamMsg) bool {
		seq = max(seq, m.Sequence)
		return true
	})
	return seq, err
}

// count is the number of entries at or after seq x, and the seq of the
// first of them (0 when none).
func (ix jobIndex) count(ctx context.Context, x uint64) (n, first uint64, err error) {
	pending, _, err := ix.r.Get(ctx, natsx.DirectGet{Seq: x, NextFor: ix.filter, Batch: 1}, func(m *jetstream.RawStreamMsg) bool {
		first = m.Sequence
		return true
	})
	if err != nil || first == 0 {
		return 0, 0, err
	}
	return pending + 1, first, nil
}

// pageBefore returns up to n entries below seq before, newest first, and
// whether older entries remain.
func (ix jobIndex) pageBefore(ctx context.Context, before uint64, n int) ([]indexEntry, bool, error) {
	cBefore, _, err := ix.count(ctx, before)
	if err != nil {
		return nil, false, err
	}
	need := uint64(n)
	// Gallop: lo is a seq with at least n entries in [lo, before), or 1.
	hi := before // fewer than n entries in [hi, before)
	lo := uint64(1)
	span := need
	for {
		if span >= hi {
			break // [1, before): bisect between 1 and hi
		}
		x := hi - span
		c, first, err := ix.count(ctx, x)
		if err != nil {
			return nil, false, err
		}
		if c-cBefore >= need {
			lo = first
			break
		}
		hi = x
		// Scale the next step by the density seen so far.
		got := c - cBefore
		switch {
		case got == 0:
			span *= 16
		default:
			span = span * 2 * need / got
		}
	}
	cLo, firstLo, err := ix.count(ctx, lo)
	if err != nil {
		return nil, false, err
	}
	if cLo-cBefore >= need {
		// Bisect for the largest x with at least n entries in [x, before).
		lo = firstLo
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			c, first, err := ix.count(ctx, mid)
			if err != nil {
				return nil, false, err
			}
			if c-cBefore >= need {
				lo = max(mid, first)
				if first >= hi {
					break
				}
			} else {
				hi = mid
			}
		}
	}
	// Read [lo, before): one batch, more when max_bytes cut it short
	// (entries hold the jobs' envelopes).
	entries := make([]indexEntry, 0, n)
	for next, done := lo, false; !done && len(entries) < n; {
		got := 0
		_, _, err = ix.r.Get(ctx, natsx.DirectGet{Seq: next, NextFor: ix.filter, Batch: n - len(entries), MaxBytes: natsx.DirectMaxBytes},
			func(m *jetstream.RawStreamMsg) bool {
				if m.Sequence >= before {
					done = true
					return false
				}
				got++
				next = m.Sequence + 1
				entries = append(entries, indexEntry{seq: m.Sequence, id: m.Header.Get(envelope.HeaderMsgID)})
				return true
			})
		if err != nil {
			return nil, false, err
		}
		if got == 0 {
			break
		}
	}
	// Newest first.
	for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
		entries[i], entries[j] = entries[j], entries[i]
	}
	older := false
	if len(entries) > 0 && entries[len(entries)-1].seq > 1 {
		c1, _, err := ix.count(ctx, 1)
		if err != nil {
			return nil, false, err
		}
		older = c1-cBefore > uint64(len(entries))
	}
	return entries, older, nil
}

// snapshotsOf reads the current snapshot of each entry's job: one batched
// direct get of their job_status keys, then the JOBS message of those not
// written yet (queued). A job found in neither (its status aged out) is
// left out.
func (s *Service) snapshotsOf(ctx context.Context, entries []indexEntry) (map[string]envelope.Snapshot, error) {
	out := make(map[string]envelope.Snapshot, len(entries))
	if len(entries) == 0 {
		return out, nil
	}
	subjects := make([]string, 0, len(entries))
	for _, e := range entries {
		if envelope.ValidateID("id", e.id) == nil {
			subjects = append(subjects, envelope.KVKeySubject(streams.JobStatus, e.id))
		}
	}
	kv := natsx.NewDirectReader(s.js, "KV_"+streams.JobStatus)
	err := kv.MultiLast(ctx, subjects, 0, func(m *jetstream.RawStreamMsg) {
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return
		}
		if snap, err := envelope.DecodeSnapshot(m.Data); err == nil {
			out[snap.ID] = snap
		}
	})
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if _, ok := out[e.id]; ok {
			continue
		}
		snap, _, err := s.store.Lookup(ctx, e.id)
		switch {
		case errors.Is(err, jobstore.ErrNotFound):
		case err != nil:
			return nil, err
		default:
			out[e.id] = snap
		}
	}
	return out, nil
}
