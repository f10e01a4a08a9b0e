package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// MaxBatch is the most jobs one POST /v1/jobs/batch takes.
const MaxBatch = 1000

// batchRequest is the body of POST /v1/jobs/batch. Items stay raw so each
// is checked by the single submission's own decoder (decodeSubmit).
type batchRequest struct {
	Jobs []json.RawMessage `json:"jobs"`
}

// batchItem is the answer for one item, in the order of the request:
// status 202 with the accepted job (its snapshot as it is now, for an
// idempotent retry), or the status and error the item alone would have got.
type batchItem struct {
	Status int                `json:"status"`
	Job    *envelope.Snapshot `json:"job,omitempty"`
	Error  *httpx.ErrorDetail `json:"error,omitempty"`
}

// batchResponse is the 200 answer of POST /v1/jobs/batch.
type batchResponse struct {
	Accepted int         `json:"accepted"`
	Refused  int         `json:"refused"`
	Jobs     []batchItem `json:"jobs"`
}

// decodeBatch parses {"jobs":[…]}: exactly one object, no unknown fields,
// 1 to MaxBatch items (more: 413 batch_too_large). Items are not looked
// into here.
func decodeBatch(b []byte) ([]json.RawMessage, *apiError) {
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return nil, newError(http.StatusBadRequest, CodeInvalidJSON, `body must be a JSON object {"jobs":[…]}`)
	}
	var req batchRequest
	if aerr := decodeStrict(b, &req, "batch"); aerr != nil {
		return nil, aerr
	}
	switch n := len(req.Jobs); {
	case n == 0:
		return nil, newError(http.StatusBadRequest, CodeInvalidJSON, "jobs must hold 1 to "+strconv.Itoa(MaxBatch)+" items")
	case n > MaxBatch:
		return nil, newError(http.StatusRequestEntityTooLarge, CodeBatchTooLarge,
			strconv.Itoa(n)+" jobs in one batch; at most "+strconv.Itoa(MaxBatch))
	}
	return req.Jobs, nil
}

// batch handles POST /v1/jobs/batch. The request as a whole passes the
// same gates as one submission (token, media type, a slot, the body size,
// then its shape); after that each item is checked and stored on its own:
// a bad item is answered with its error and does not sink the others. All
// the batch's messages are published asynchronously and their PubAcks
// awaited together; an item is reported accepted only once JetStream
// acknowledged its job.
func (s *Service) batch(w http.ResponseWriter, r *http.Request) {
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
	body, aerr := s.readBodyLimit(w, r, s.cfg.MaxBatchBody)
	if aerr != nil {
		s.reject(w, r, aerr)
		return
	}
	raws, aerr := decodeBatch(body)
	if aerr != nil {
		s.reject(w, r, aerr)
		return
	}
	ctx := r.Context()
	b := s.newBatchPub(ctx, len(raws), true)
	var ready []int // the items to publish
	for i, raw := range raws {
		req, aerr := s.checkRequest(raw)
		if aerr != nil {
			b.items[i] = refusedItem(aerr)
			continue
		}
		b.jobs[i], b.dues[i] = newJob(p.User, req), req.due
		if req.key() != "" {
			b.keyed[i] = true
			snap, found, aerr := s.keyedExisting(ctx, b.jobs[i])
			if aerr != nil {
				b.items[i] = refusedItem(aerr)
				continue
			}
			if found {
				b.items[i] = acceptedItem(snap)
				continue
			}
		}
		ready = append(ready, i)
	}
	// Published together once all are checked. Publishing each between
	// the checks (so JetStream stores the first while the next are
	// checked) was slower with batches of 1,000 in every run of
	// BENCHMARKS.md Run R, likely because nats.go's flusher then sends
	// many small writes instead of a few large ones.
	for _, i := range ready {
		b.publish(i)
	}
	b.await()

	accepted, refused := 0, 0
	for _, it := range b.items {
		if it.Job != nil {
			accepted++
		} else {
			refused++
			s.metrics.rejected.WithLabelValues(it.Error.Code).Inc()
		}
	}
	s.log.Info("batch answered", "user", p.User, "items", len(b.items), "accepted", accepted, "refused", refused)
	writeBatch(w, accepted, refused, b.answer())
}

// batchPub publishes the jobs of one batch as its items are checked and
// awaits their PubAcks together (docs/design.md#batches).
type batchPub struct {
	s     *Service
	ctx   context.Context
	items []batchItem
	jobs  []envelope.Job
	dues  []time.Time
	// encoded[i] is items[i] as JSON once known; for a published job,
	// its accepted answer, encoded while the PubAcks are on their way and
	// used if the PubAck confirms it.
	encoded [][]byte
	todo    []int // the items published
	// Each job's index entry goes out right behind it, pipelined with the
	// jobs rather than after their PubAcks (a batch is one round of
	// PubAcks, not two). An entry whose job was then refused names a job
	// that does not exist; the list skips it (docs/design.md#batches).
	// A keyed item's entry is its own (Nats-Msg-Id the job id, so a
	// keyed retry de-duplicates it and repairs a missing one); the other
	// items' entries are bundled per (user, kind), one bundle per chunk.
	keyed []bool
	// pb publishes them all and collects their PubAcks; acks[i] and
	// indexed[i] are the indexes in pb of item i's job and of its own
	// index entry (-1: none).
	pb            *natsx.PubBatch
	acks, indexed []int
	bundler       indexBundler
	down          bool // NATS was disconnected at the first publish
	checked       bool
	encode        bool // answer with answer(): encode while awaiting
}

// newBatchPub is the publisher of n items; encode: its answer is written
// with answer().
func (s *Service) newBatchPub(ctx context.Context, n int, encode bool) *batchPub {
	return &batchPub{
		s: s, ctx: ctx, encode: encode,
		items: make([]batchItem, n), jobs: make([]envelope.Job, n), dues: make([]time.Time, n),
		encoded: make([][]byte, n), keyed: make([]bool, n),
	}
}

// publishAsync publishes m to stream without waiting: its index in b.pb.
func (b *batchPub) publishAsync(m *nats.Msg, stream string) (int, error) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(jetstream.ExpectedStreamHeader, stream)
	return b.pb.Publish(m)
}

// publish publishes job i and its index entry without waiting.
func (b *batchPub) publish(i int) {
	s := b.s
	if !b.checked {
		b.checked, b.down = true, !s.nc.IsConnected()
		if !b.down {
			// Every item's job and at most one index entry each.
			pb, err := natsx.NewPubBatch(s.nc, 2*len(b.items))
			if err != nil {
				s.log.Warn("batch: subscribing for PubAcks failed", "err", err)
				b.down = true
			}
			b.pb, b.bundler.pb = pb, pb
			b.acks, b.indexed = make([]int, len(b.items)), make([]int, len(b.items))
		}
	}
	if b.down {
		b.items[i] = refusedItem(unavailable())
		return
	}
	msg, stream, aerr := s.jobMsg(b.ctx, b.jobs[i], b.dues[i])
	if aerr != nil {
		b.items[i] = refusedItem(aerr)
		return
	}
	k, err := b.publishAsync(msg, stream)
	if err != nil {
		b.items[i] = refusedItem(classifyNATS(err))
		return
	}
	b.acks[i], b.indexed[i] = k, -1
	b.todo = append(b.todo, i)
	if !b.keyed[i] {
		b.bundler.add(s, b.jobs[i], msg.Data)
		return
	}
	if b.indexed[i], err = b.publishAsync(indexMsg(b.jobs[i], msg.Data), streams.JobIndex); err != nil {
		s.metrics.unindexed.Inc()
		s.log.Warn("job not indexed: it will not be listed", "job", b.jobs[i].ID, "user", b.jobs[i].User, "err", err)
	}
}

// await encodes the published jobs' accepted answers, then waits for
// their PubAcks within one RequestTimeout and fills items; the index
// entries' PubAcks are awaited too (a list right after the answer shows
// the batch's jobs).
func (b *batchPub) await() {
	if b.pb != nil {
		defer b.pb.Close()
	}
	if len(b.todo) == 0 {
		return
	}
	s, ctx := b.s, b.ctx
	b.bundler.flush(s)
	if b.encode {
		for _, i := range b.todo {
			b.encoded[i] = encodeItem(acceptedItem(acceptedSnapshot(b.jobs[i], b.dues[i])))
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	b.pb.Wait(wctx)
	b.bundler.await(wctx, s)
	s.awaitIndexed(wctx, b.pb, b.todo, b.jobs, b.indexed)
	for _, i := range b.todo {
		job := b.jobs[i]
		log := jobLog{log: s.log, ctx: ctx, job: job.ID, user: job.User, kind: job.Kind}
		ack, err := b.pb.Result(wctx, b.acks[i])
		switch {
		case err == nil:
			if ack.Duplicate {
				snap, err := s.existing(wctx, job.ID)
				if err != nil {
					snap = acceptedSnapshot(job, b.dues[i])
				}
				log.at(slog.LevelInfo, "duplicate submission in a batch", "seq", ack.Sequence)
				b.items[i], b.encoded[i] = acceptedItem(snap), nil
				continue
			}
			s.metrics.submitted.WithLabelValues(job.Kind, string(job.Priority)).Inc()
			log.at(slog.LevelDebug, "job accepted in a batch", "priority", string(job.Priority), "seq", ack.Sequence)
			b.items[i] = acceptedItem(acceptedSnapshot(job, b.dues[i]))
		case wctx.Err() != nil && errors.Is(err, wctx.Err()):
			// No PubAck in time: the job may or may not be stored. Like a
			// single submission's timeout, it is refused (503); a retry
			// with the same idempotency key finds it if it was stored.
			log.at(slog.LevelWarn, "job of a batch: no PubAck in time")
			b.items[i], b.encoded[i] = refusedItem(unavailable()), nil
		default:
			log.at(slog.LevelWarn, "job of a batch not stored", "err", err)
			b.items[i], b.encoded[i] = refusedItem(classifyNATS(err)), nil
		}
	}
}

// answer is every item's JSON, in order.
func (b *batchPub) answer() [][]byte {
	for i, e := range b.encoded {
		if e == nil {
			b.encoded[i] = encodeItem(b.items[i])
		}
	}
	return b.encoded
}

// encodeItem is one item of the answer as JSON.
func encodeItem(it batchItem) []byte {
	e, err := json.Marshal(it)
	if err != nil { // a snapshot and an error detail always marshal
		panic(err)
	}
	return e
}

// writeBatch writes the 200 answer, batchResponse, from its items'
// JSON: the same bytes httpx.WriteJSON(batchResponse{…}) would write.
func writeBatch(w http.ResponseWriter, accepted, refused int, items [][]byte) {
	n := 64
	for _, e := range items {
		n += len(e) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, `{"accepted":`...)
	out = strconv.AppendInt(out, int64(accepted), 10)
	out = append(out, `,"refused":`...)
	out = strconv.AppendInt(out, int64(refused), 10)
	out = append(out, `,"jobs":[`...)
	for i, e := range items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, e...)
	}
	out = append(out, "]}\n"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// awaitIndexed reads the PubAcks of a batch's own index entries (keyed
// items'), which pb waited for.
func (s *Service) awaitIndexed(ctx context.Context, pb *natsx.PubBatch, todo []int, jobs []envelope.Job, indexed []int) {
	for _, i := range todo {
		if indexed[i] < 0 {
			continue
		}
		if _, err := pb.Result(ctx, indexed[i]); err != nil {
			s.metrics.unindexed.Inc()
			s.log.Warn("job not indexed: it will not be listed", "job", jobs[i].ID, "user", jobs[i].User, "err", err)
		}
	}
}

func acceptedItem(snap envelope.Snapshot) batchItem {
	return batchItem{Status: http.StatusAccepted, Job: &snap}
}

func refusedItem(e *apiError) batchItem {
	return batchItem{Status: e.Status, Error: &httpx.ErrorDetail{Code: e.Code, Message: e.Message}}
}
