package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/httpx"
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
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, newError(http.StatusBadRequest, CodeInvalidJSON, "body is not a valid batch: "+jsonReason(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, newError(http.StatusBadRequest, CodeInvalidJSON, "body holds more than one JSON value")
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
	items := make([]batchItem, len(raws))
	jobs := make([]envelope.Job, len(raws))
	dues := make([]time.Time, len(raws))
	var todo []int // items to publish
	for i, raw := range raws {
		req, aerr := s.checkRequest(raw)
		if aerr != nil {
			items[i] = refusedItem(aerr)
			continue
		}
		jobs[i], dues[i] = newJob(p.User, req), req.due
		if req.key() != "" {
			snap, found, aerr := s.keyedExisting(ctx, jobs[i])
			if aerr != nil {
				items[i] = refusedItem(aerr)
				continue
			}
			if found {
				items[i] = acceptedItem(snap)
				continue
			}
		}
		todo = append(todo, i)
	}
	s.publishBatch(ctx, todo, jobs, dues, items)

	resp := batchResponse{Jobs: items}
	for _, it := range items {
		if it.Job != nil {
			resp.Accepted++
		} else {
			resp.Refused++
			s.metrics.rejected.WithLabelValues(it.Error.Code).Inc()
		}
	}
	s.log.Info("batch answered", "user", p.User, "items", len(items), "accepted", resp.Accepted, "refused", resp.Refused)
	httpx.WriteJSON(w, http.StatusOK, resp)
}

// publishBatch publishes the jobs of items todo asynchronously and waits for
// their PubAcks together, within one RequestTimeout; it fills items[i].
func (s *Service) publishBatch(ctx context.Context, todo []int, jobs []envelope.Job, dues []time.Time, items []batchItem) {
	if len(todo) == 0 {
		return
	}
	if !s.nc.IsConnected() {
		for _, i := range todo {
			items[i] = refusedItem(unavailable())
		}
		return
	}
	// Each job's index entry goes out right behind it, pipelined with the
	// jobs rather than after their PubAcks (a batch is one round of
	// PubAcks, not two). An entry whose job was then refused names a job
	// that does not exist; the list skips it (docs/design.md#batches).
	futures := make([]jetstream.PubAckFuture, len(items))
	indexed := make([]jetstream.PubAckFuture, len(items))
	for _, i := range todo {
		msg, stream, aerr := s.jobMsg(ctx, jobs[i], dues[i])
		if aerr != nil {
			items[i] = refusedItem(aerr)
			continue
		}
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithExpectStream(stream))
		if err != nil {
			items[i] = refusedItem(classifyNATS(err))
			continue
		}
		futures[i] = f
		if indexed[i], err = s.js.PublishMsgAsync(indexMsg(jobs[i], msg.Data), jetstream.WithExpectStream(streams.JobIndex)); err != nil {
			s.metrics.unindexed.Inc()
			s.log.Warn("job not indexed: it will not be listed", "job", jobs[i].ID, "user", jobs[i].User, "err", err)
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	defer s.awaitIndexed(wctx, todo, jobs, indexed)
	for _, i := range todo {
		f := futures[i]
		if f == nil {
			continue
		}
		job := jobs[i]
		log := jobLog{log: s.log, ctx: ctx, job: job.ID, user: job.User, kind: job.Kind}
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				snap, err := s.existing(wctx, job.ID)
				if err != nil {
					snap = acceptedSnapshot(job, dues[i])
				}
				log.at(slog.LevelInfo, "duplicate submission in a batch", "seq", ack.Sequence)
				items[i] = acceptedItem(snap)
				continue
			}
			s.metrics.submitted.WithLabelValues(job.Kind, string(job.Priority)).Inc()
			log.at(slog.LevelDebug, "job accepted in a batch", "priority", string(job.Priority), "seq", ack.Sequence)
			items[i] = acceptedItem(acceptedSnapshot(job, dues[i]))
		case err := <-f.Err():
			log.at(slog.LevelWarn, "job of a batch not stored", "err", err)
			items[i] = refusedItem(classifyNATS(err))
		case <-wctx.Done():
			// No PubAck in time: the job may or may not be stored. Like a
			// single submission's timeout, it is refused (503); a retry
			// with the same idempotency key finds it if it was stored.
			log.at(slog.LevelWarn, "job of a batch: no PubAck in time")
			items[i] = refusedItem(unavailable())
		}
	}
}

// awaitIndexed waits for the PubAcks of a batch's index entries.
func (s *Service) awaitIndexed(ctx context.Context, todo []int, jobs []envelope.Job, indexed []jetstream.PubAckFuture) {
	for _, i := range todo {
		f := indexed[i]
		if f == nil {
			continue
		}
		var err error
		select {
		case <-f.Ok():
		case err = <-f.Err():
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
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
