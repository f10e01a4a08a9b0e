package jobstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
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
// writes a queued snapshot; the job's first write creates its snapshot in
// job_status: a processor's claim (Claim: running at seq 0, no event) or
// running at seq 1, or a cancel at seq 1. Until then the JOBS message is the job's state, and Lookup reads it there.
// The processor acks the message only after it stored a snapshot, so at any
// moment at least one of the two holds the job.

// Lookup returns the job's current snapshot and its revision: the stored
// snapshot, or — for a job accepted but not yet written by anyone — the
// queued snapshot of its message in JOBS, at RevAbsent. ErrNotFound means
// neither holds it.
//
// Reads, in order: job_status (direct, any replica), JOBS on its leader,
// SCHEDULED on its leader (a job not due yet is scheduled), then
// job_status on its leader. The last read covers a processor that
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
	m, err := natsx.GetOnLeader(ctx, s.js, streams.Jobs, natsx.MsgGet{Seq: 1, NextFor: envelope.JobLookupSubject(id)})
	if err != nil {
		return envelope.Snapshot{}, 0, err
	}
	if m != nil {
		if job, ok := jobOf(m, id); ok {
			return envelope.NewSnapshot(job), RevAbsent, nil
		}
	}
	if snap, ok, err := s.scheduled(ctx, id); err != nil || ok {
		return snap, RevAbsent, err
	}
	return s.getOnLeader(ctx, id)
}

// scheduled reads a job that is not due yet from SCHEDULED: its schedule
// message (status scheduled, with its run_at), or its fired copy that JOBS
// has not sourced yet (queued). Both are read on the SCHEDULED leader.
func (s *Store) scheduled(ctx context.Context, id string) (envelope.Snapshot, bool, error) {
	m, err := natsx.GetOnLeader(ctx, s.js, streams.Scheduled, natsx.MsgGet{LastFor: envelope.ScheduleSubject(id)})
	if err != nil {
		return envelope.Snapshot{}, false, err
	}
	if m != nil {
		_, job, err := envelope.DecodeJob(m.Data)
		at, ok := envelope.ScheduledAt(m.Header)
		if err == nil && ok && job.ID == id {
			return envelope.NewScheduledSnapshot(job, at), true, nil
		}
	}
	m, err = natsx.GetOnLeader(ctx, s.js, streams.Scheduled, natsx.MsgGet{LastFor: envelope.ScheduleFireLookup(id)})
	if err != nil || m == nil {
		return envelope.Snapshot{}, false, err
	}
	if _, job, err := envelope.DecodeJob(m.Data); err == nil && job.ID == id {
		return envelope.NewSnapshot(job), true, nil
	}
	return envelope.Snapshot{}, false, nil
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
	m, err := natsx.GetOnLeader(ctx, s.js, "KV_"+streams.JobStatus, natsx.MsgGet{LastFor: "$KV." + streams.JobStatus + "." + id})
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
