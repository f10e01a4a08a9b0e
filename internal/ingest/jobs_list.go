package ingest

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

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
	idx    int    // with before: the bundle at before's jobs before idx come first
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
		seq, idx, ok := parseCursor(c)
		if !ok {
			return lq, newError(http.StatusBadRequest, CodeInvalidCursor, "cursor is not one this API gave")
		}
		lq.before, lq.idx = seq, idx
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

// listJobs reads a user's jobs newest first from the cursor on until
// limit jobs matched, the index is exhausted or maxListScan jobs were
// looked at.
func (s *Service) listJobs(ctx context.Context, lq listQuery) (listResponse, error) {
	filter := envelope.UserIndexFilter(lq.user)
	if lq.kind != "" {
		filter = envelope.IndexSubject(lq.user, lq.kind)
	}
	l := newLister(jobIndex{r: natsx.NewDirectReader(s.js, streams.JobIndex), filter: filter})
	resp := listResponse{Jobs: []envelope.Snapshot{}}
	if err := l.start(ctx, lq.before, lq.idx); err != nil {
		return resp, err
	}
	seen := make(map[string]bool)
	scanned := 0
	for {
		want := lq.limit - len(resp.Jobs)
		if lq.status != "" {
			want = max(want, min(lq.limit*4, MaxListLimit)) // most may not match
		}
		refs, err := l.next(ctx, want)
		if err != nil {
			return resp, err
		}
		scanned += len(refs)
		snaps, err := s.snapshotsOf(ctx, refs)
		if err != nil {
			return resp, err
		}
		for i, e := range refs {
			snap, ok := snaps[e.id]
			if !ok || seen[e.id] || (lq.status != "" && snap.Status != lq.status) {
				continue
			}
			seen[e.id] = true
			resp.Jobs = append(resp.Jobs, snap)
			if len(resp.Jobs) == lq.limit {
				if i < len(refs)-1 || l.more(ctx) {
					resp.NextCursor = e.cursor()
				}
				return resp, nil
			}
		}
		if !l.more(ctx) {
			return resp, nil
		}
		if len(refs) == 0 || scanned >= maxListScan || l.reads >= maxListReads {
			resp.NextCursor = l.cursor()
			return resp, nil
		}
	}
}

// indexEntry is one job named by JOBINDEX and where: the stream seq of
// its entry and, in a bundle, its place there (0 for a single entry).
type indexEntry struct {
	seq uint64
	idx int
	id  string
}

// cursor is the cursor of the page that follows this job: "<seq>" for
// the first job of an entry (the jobs of the entries below seq; the
// format of the single entries' cursors, which stays valid), else
// "<seq>.<idx>" (the bundle's jobs before idx, then the entries below).
func (e indexEntry) cursor() string {
	if e.idx == 0 {
		return strconv.FormatUint(e.seq, 10)
	}
	return strconv.FormatUint(e.seq, 10) + "." + strconv.Itoa(e.idx)
}

// parseCursor reads a cursor given by cursor(): seq must be at least 2
// for "<seq>" (something lies below it), idx at least 1 for
// "<seq>.<idx>".
func parseCursor(c string) (seq uint64, idx int, ok bool) {
	sq, ix, bundled := strings.Cut(c, ".")
	seq, err := strconv.ParseUint(sq, 10, 64)
	if err != nil || sq == "" || sq[0] == '+' {
		return 0, 0, false
	}
	if !bundled {
		return seq, 0, seq >= 2
	}
	idx, err = strconv.Atoi(ix)
	if err != nil || ix == "" || ix[0] == '+' || ix[0] == '-' || idx < 1 || idx >= maxBundleJobs*16 || seq < 1 {
		return 0, 0, false
	}
	return seq, idx, true
}

// entryJobs are the jobs an index entry names, oldest first: a bundle's
// records, or a single entry's job (its Nats-Msg-Id). A bundle that does
// not decode names none (and is logged by no one: it is skipped).
func entryJobs(m *jetstream.RawStreamMsg) []indexEntry {
	if m.Header.Get(envelope.HeaderIndexBundle) == "" {
		return []indexEntry{{seq: m.Sequence, id: m.Header.Get(envelope.HeaderMsgID)}}
	}
	recs, err := envelope.DecodeIndexBundle(m.Data)
	if err != nil {
		return nil
	}
	out := make([]indexEntry, len(recs))
	for i, r := range recs {
		out[i] = indexEntry{seq: m.Sequence, idx: i, id: r.ID}
	}
	return out
}

// Bounds of one list request's reads of JOBINDEX.
const (
	// maxListReads bounds the windows of entries one request reads.
	maxListReads = 12
	// firstWindowCap bounds a window while fewer than densitySamples
	// entries were seen: a first guess of the jobs per entry may be far
	// off (singles seen, bundles below), and an entry may hold up to
	// maxBundleJobs jobs.
	firstWindowCap = 64
	densitySamples = 8
)

// lister hands out a filter's jobs newest first, from a cursor on. It
// reads the entries below the position in windows sized by the jobs per
// entry seen so far: a page of limit jobs reads about limit/density
// entries, not limit entries.
type lister struct {
	ix jobIndex
	// before: every entry below it is still to read; 0 while nothing was
	// read and no cursor given (the newest entry is next).
	before  uint64
	pending []indexEntry // read, not yet handed out, newest first
	// jobs and entries read, for the density.
	jobs, entries int
	reads         int
	done          bool       // no entry below before
	oldest        uint64     // the filter's first seq, once known
	last          indexEntry // the last job handed out, if handed
	handed        bool
}

func newLister(ix jobIndex) *lister { return &lister{ix: ix} }

// start positions l below cursor (before, idx): with idx > 0, the jobs of
// the bundle at before that precede idx come first.
func (l *lister) start(ctx context.Context, before uint64, idx int) error {
	l.before = before
	if idx == 0 {
		return nil
	}
	m, err := l.ix.at(ctx, before)
	if err != nil || m == nil {
		return err // the entry aged out: go on below it
	}
	jobs := entryJobs(m)
	l.push(jobs[:min(idx, len(jobs))])
	l.jobs, l.entries = len(jobs), 1 // a sample of the density
	return nil
}

// push adds the jobs of one entry (oldest first) to pending, newest first.
func (l *lister) push(jobs []indexEntry) {
	for i := len(jobs) - 1; i >= 0; i-- {
		l.pending = append(l.pending, jobs[i])
	}
}

// next returns up to n jobs, newest first; fewer only when the index has
// no more or the reads' bound was reached.
func (l *lister) next(ctx context.Context, n int) ([]indexEntry, error) {
	for len(l.pending) < n && !l.done && l.reads < maxListReads {
		l.reads++
		if l.before == 1 {
			l.done = true
			break
		}
		w := (n - len(l.pending)) * l.entries
		w = (w + max(l.jobs, 1) - 1) / max(l.jobs, 1) // ceil(need / density)
		if l.entries < densitySamples {
			w = min(w, firstWindowCap)
		}
		if w <= 1 {
			// Nothing read yet, or one entry may do: the newest entry
			// below the position, in one request (the last entry of each
			// subject up to there).
			m, err := l.ix.lastBelow(ctx, l.before)
			if err != nil {
				return nil, err
			}
			if m == nil {
				l.done = true
				break
			}
			l.took(m)
			continue
		}
		msgs, err := l.ix.pageBefore(ctx, l.before, w)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			l.took(m)
		}
		if len(msgs) < w {
			l.done = true
		}
	}
	k := min(n, len(l.pending))
	out := l.pending[:k:k]
	l.pending = l.pending[k:]
	if k > 0 {
		l.last, l.handed = out[k-1], true
	}
	return out, nil
}

// cursor is where the jobs not handed out yet begin: below the last job
// handed out, or, when none was, below before.
func (l *lister) cursor() string {
	if l.handed {
		return l.last.cursor()
	}
	return strconv.FormatUint(l.before, 10)
}

// took adds entry m, the newest below before, to pending.
func (l *lister) took(m *jetstream.RawStreamMsg) {
	jobs := entryJobs(m)
	l.push(jobs)
	l.jobs += len(jobs)
	l.entries++
	l.before = m.Sequence
}

// more says whether jobs remain after those handed out.
func (l *lister) more(ctx context.Context) bool {
	if len(l.pending) > 0 {
		return true
	}
	if l.done {
		return false
	}
	if l.before == 0 {
		return true // nothing read yet
	}
	if l.before == 1 {
		return false
	}
	if l.oldest == 0 {
		_, first, err := l.ix.count(ctx, 1)
		if err != nil {
			return true // a cursor to an empty page at worst
		}
		if first == 0 {
			return false
		}
		l.oldest = first
	}
	return l.oldest < l.before
}

// jobIndex reads one filter (a user's, or a user's and kind's) of JOBINDEX.
//
// Direct gets read forward only, so a window of the newest n entries
// below seq C is found by counting: count(X), the entries at or after X,
// is one direct get of batch 1 (the first entry at or after X, and the
// server's count of those after it). The window starts at the largest X
// with count(X) - count(C) >= n, found by galloping down from C and then
// bisecting; then one batched direct get reads it. The cost grows with the
// logarithm of how far back the window lies in the stream, never with how
// many jobs the user has. docs/design.md#listing-a-users-jobs
type jobIndex struct {
	r      *natsx.DirectReader
	filter string
}

// lastBelow is the newest entry below seq before (0: the newest of all),
// nil when there is none: the newest of the last entries of each of the
// filter's subjects (one per kind) up to before-1, in one request.
func (ix jobIndex) lastBelow(ctx context.Context, before uint64) (*jetstream.RawStreamMsg, error) {
	if before == 1 {
		return nil, nil
	}
	req := natsx.DirectGet{MultiLast: []string{ix.filter}, Batch: maxKindsPerUser, MaxBytes: natsx.DirectMaxBytes}
	if before > 1 {
		req.UpToSeq = before - 1
	}
	var last *jetstream.RawStreamMsg
	get := func() error {
		_, _, err := ix.r.Get(ctx, req, func(m *jetstream.RawStreamMsg) bool {
			if (before == 0 || m.Sequence < before) && (last == nil || m.Sequence > last.Sequence) {
				last = m
			}
			return true
		})
		return err
	}
	if err := get(); err != nil || last != nil || req.UpToSeq == 0 {
		return last, err
	}
	// The server answers nothing when up_to_seq lies past the stream's
	// last seq (a cursor of a purged stream): then every entry is below.
	req.UpToSeq = 0
	return last, get()
}

// at is the entry at seq, nil if it is gone.
func (ix jobIndex) at(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	var got *jetstream.RawStreamMsg
	_, _, err := ix.r.Get(ctx, natsx.DirectGet{Seq: seq, NextFor: ix.filter, Batch: 1}, func(m *jetstream.RawStreamMsg) bool {
		if m.Sequence == seq {
			got = m
		}
		return false
	})
	return got, err
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

// pageBefore returns the n newest entries below seq before (fewer when
// there are not that many), newest first.
func (ix jobIndex) pageBefore(ctx context.Context, before uint64, n int) ([]*jetstream.RawStreamMsg, error) {
	cBefore, _, err := ix.count(ctx, before)
	if err != nil {
		return nil, err
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
			return nil, err
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
		return nil, err
	}
	if cLo-cBefore >= need {
		// Bisect for the largest x with at least n entries in [x, before).
		lo = firstLo
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			c, first, err := ix.count(ctx, mid)
			if err != nil {
				return nil, err
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
	msgs := make([]*jetstream.RawStreamMsg, 0, n)
	for next, done := lo, false; !done && len(msgs) < n; {
		got := 0
		_, _, err = ix.r.Get(ctx, natsx.DirectGet{Seq: next, NextFor: ix.filter, Batch: n - len(msgs), MaxBytes: natsx.DirectMaxBytes},
			func(m *jetstream.RawStreamMsg) bool {
				if m.Sequence >= before {
					done = true
					return false
				}
				got++
				next = m.Sequence + 1
				msgs = append(msgs, m)
				return true
			})
		if err != nil {
			return nil, err
		}
		if got == 0 {
			break
		}
	}
	// Newest first.
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	return msgs, nil
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
