package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// RevAbsent is the revision of a job that has no snapshot in job_status
// yet: an accepted job that no processor has written, read from its message
// in JOBS (Lookup). A change at RevAbsent creates the snapshot
// (ApplyAt), and loses like any compare-and-set when someone created it
// first.
const RevAbsent = ^uint64(0)

// A job costs one durable write at submission: its message in JOBS. Nobody
// writes a queued snapshot; the job's first change (a processor's running
// or outcome, or a cancel) creates its snapshot in job_status at seq 1.
// Until then the JOBS message is the job's state, and Lookup reads it there.
// The processor acks the message only after it stored a snapshot, so at any
// moment at least one of the two holds the job.

// Lookup returns the job's current snapshot and its revision: the stored
// snapshot, or — for a job accepted but not yet written by anyone — the
// queued snapshot of its message in JOBS, at RevAbsent. ErrNotFound means
// neither holds it.
//
// Reads, in order: job_status (direct, any replica), JOBS on its leader,
// then job_status on its leader. The last read covers a processor that
// stored the job and acked its message between the first two, and a
// job_status replica that lags behind the leader.
//
// The JOBS read takes the job's first message, as the processor runs the
// first one and settles any later copy against the snapshot the first
// created. A message that does not hold the job its subject names (another
// id, kind or priority: the processor dead-letters those) is not the job.
func (s *Store) Lookup(ctx context.Context, id string) (envelope.Snapshot, uint64, error) {
	snap, rev, err := s.Get(ctx, id)
	if !errors.Is(err, ErrNotFound) {
		return snap, rev, err
	}
	m, err := s.msgOnLeader(ctx, streams.Jobs, leaderGet{Seq: 1, NextFor: envelope.JobLookupSubject(id)})
	if err != nil {
		return envelope.Snapshot{}, 0, err
	}
	if m != nil {
		if job, ok := jobOf(m, id); ok {
			return envelope.NewSnapshot(job), RevAbsent, nil
		}
	}
	return s.getOnLeader(ctx, id)
}

// jobOf decodes the job of a JOBS message found on id's subject; ok is
// false when it is not that job.
func jobOf(m *jetstream.RawStreamMsg, id string) (envelope.Job, bool) {
	p, kind, sid, err := envelope.ParseJobSubject(m.Subject)
	if err != nil || sid != id {
		return envelope.Job{}, false
	}
	_, job, err := envelope.DecodeJob(m.Data)
	if err != nil || job.ID != id || job.Kind != kind || job.Priority != p {
		return envelope.Job{}, false
	}
	return job, true
}

// getOnLeader is Get answered by the job_status leader, never by a replica
// that may lag: its "not found" can be trusted.
func (s *Store) getOnLeader(ctx context.Context, id string) (envelope.Snapshot, uint64, error) {
	m, err := s.msgOnLeader(ctx, "KV_"+streams.JobStatus, leaderGet{LastFor: "$KV." + streams.JobStatus + "." + id})
	if err != nil {
		return envelope.Snapshot{}, 0, err
	}
	if m == nil || isKVDelete(m.Header) {
		return envelope.Snapshot{}, 0, ErrNotFound
	}
	snap, err := envelope.DecodeSnapshot(m.Data)
	if err != nil {
		return envelope.Snapshot{}, 0, fmt.Errorf("jobstore: decode %s: %w", id, err)
	}
	return snap, m.Sequence, nil
}

// isKVDelete reports a KV delete or purge marker.
func isKVDelete(h nats.Header) bool {
	op := h.Get("KV-Operation")
	return op == "DEL" || op == "PURGE"
}

// leaderGet is a $JS.API.STREAM.MSG.GET request: the last message on a
// subject, or the first at or after a sequence on one.
type leaderGet struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

// msgOnLeader returns the message of stream that r asks for (its subject
// may hold wildcards), nil when there is none. It asks
// $JS.API.STREAM.MSG.GET, which only the stream's leader answers: a replica
// answering a direct get may not have a message its leader acknowledged
// yet, and "no message" from it would be a 404 for a job just accepted.
func (s *Store) msgOnLeader(ctx context.Context, stream string, r leaderGet) (*jetstream.RawStreamMsg, error) {
	subject := r.LastFor + r.NextFor
	req, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	prefix := s.js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	if !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	m, err := s.js.Conn().RequestWithContext(ctx, prefix+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("jobstore: read %s on %s: %w", subject, stream, err)
	}
	var resp struct {
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Header  []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("jobstore: read %s on %s: %w", subject, stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("jobstore: read %s on %s: %d %s", subject, stream, resp.Error.Code, resp.Error.Description)
	case resp.Message == nil || resp.Message.Seq == 0:
		return nil, fmt.Errorf("jobstore: read %s on %s: an answer without a message", subject, stream)
	}
	out := &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Seq, Data: resp.Message.Data}
	if len(resp.Message.Header) > 0 {
		if out.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return nil, fmt.Errorf("jobstore: read %s on %s: %w", subject, stream, err)
		}
	}
	return out, nil
}
