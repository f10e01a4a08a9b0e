package ingest

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// rerunnable are the final states a job may be run again from.
var rerunnable = map[envelope.Status]bool{
	envelope.StatusFailed:    true,
	envelope.StatusDead:      true,
	envelope.StatusCancelled: true,
	envelope.StatusExpired:   true,
}

// maxRerunScan bounds the index entries read to find a job's envelope.
const maxRerunScan = 20000

// errInputGone: the job's envelope is no longer in JOBINDEX.
var errInputGone = errors.New("ingest: the job's input is no longer kept")

// rerun handles POST /v1/jobs/{id}/rerun: a job that ended failed, dead,
// cancelled or expired is submitted again as a new job of its owner with
// the same kind, priority and input and rerun_of = its id. The old job
// stays as it ended. The new job's id is derived from the old one
// (rerunJobID), so a double click — or a redrive racing a rerun — makes one
// rerun, answered with that job as it is now.
func (s *Service) rerun(w http.ResponseWriter, r *http.Request) {
	p, snap, _, aerr := s.lookup(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if !rerunnable[snap.Status] {
		writeError(w, newError(http.StatusConflict, CodeNotRerunnable,
			"job "+snap.ID+" is "+string(snap.Status)+"; only a failed, dead, cancelled or expired job can be rerun"))
		return
	}
	ctx := r.Context()
	old, err := s.jobEnvelope(ctx, snap)
	switch {
	case errors.Is(err, errInputGone):
		writeError(w, newError(http.StatusConflict, CodeNotRerunnable, "job "+snap.ID+": "+err.Error()))
		return
	case err != nil:
		s.log.Warn("rerun: reading the job's envelope failed", "job", snap.ID, "err", err)
		writeError(w, unavailable())
		return
	}
	job := rerunJob(old)
	snapNew, found, aerr := s.keyedExisting(ctx, job)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if found {
		s.accepted(w, snapNew)
		return
	}
	s.log.Info("rerun", "job", old.ID, "rerun", job.ID, "by", p.User)
	s.publish(ctx, w, r, p, job, time.Time{})
}

// rerunJobID is the id of the rerun of job old: derived from it alone.
func rerunJobID(user, old string) string { return keyedJobID(user, "beamline-rerun\x00"+old) }

// rerunJob is the rerun of old: same user, kind, priority and input.
func rerunJob(old envelope.Job) envelope.Job {
	return envelope.Job{
		ID:        rerunJobID(old.User, old.ID),
		User:      old.User,
		Kind:      old.Kind,
		Priority:  old.Priority,
		Input:     old.Input,
		CreatedAt: time.Now().UTC(),
		RerunOf:   old.ID,
	}
}

// jobEnvelope reads a job's submitted envelope from its JOBINDEX entry,
// found from the job's creation time: the entry is written right after
// the job's PubAck (a batch's right behind its jobs), so it lies a few
// entries after that time. The entry is the job's own or a bundle that
// names it.
func (s *Service) jobEnvelope(ctx context.Context, snap envelope.Snapshot) (envelope.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	r := natsx.NewDirectReader(s.js, streams.JobIndex)
	from := snap.CreatedAt.Add(-time.Second)
	var job envelope.Job
	var found, decodeErr bool
	scanned := 0
	req := natsx.DirectGet{StartTime: &from, NextFor: envelope.IndexSubject(snap.User, snap.Kind), Batch: natsx.DirectBatch, MaxBytes: natsx.DirectMaxBytes}
	for !found && scanned < maxRerunScan {
		got := 0
		pending, _, err := r.Get(ctx, req, func(m *jetstream.RawStreamMsg) bool {
			got++
			req.Seq, req.StartTime = m.Sequence+1, nil
			body := m.Data
			if m.Header.Get(envelope.HeaderIndexBundle) != "" {
				// A bundle of a batch's jobs: the job's own record.
				if body = bundledEnvelope(m.Data, snap.ID); body == nil {
					return true
				}
			} else if m.Header.Get(envelope.HeaderMsgID) != snap.ID {
				return true
			}
			_, j, err := envelope.DecodeJob(body)
			if err != nil || j.ID != snap.ID {
				decodeErr = true
				return false
			}
			job, found = j, true
			return false
		})
		if err != nil {
			return job, err
		}
		scanned += got
		if found || decodeErr || got == 0 || pending == 0 {
			break
		}
	}
	if !found {
		return job, errInputGone
	}
	return job, nil
}

// bundledEnvelope is the envelope of job id in a bundle's body, nil when
// the bundle does not name it (or does not decode).
func bundledEnvelope(body []byte, id string) []byte {
	recs, err := envelope.DecodeIndexBundle(body)
	if err != nil {
		return nil
	}
	for _, r := range recs {
		if r.ID == id {
			return r.Envelope
		}
	}
	return nil
}
