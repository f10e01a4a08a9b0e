package ingest

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// A job is listed (GET /v1/jobs) through its entry in JOBINDEX:
// jobindex.<user>.<kind>, body the job's submitted envelope (what a rerun
// runs again: JOBS forgets a job once it is done), Nats-Msg-Id the job id.
// A single submission writes the entry after the job's PubAck, so it
// names a stored job; a batch pipelines each entry right behind its job,
// and an entry whose job was then refused is skipped by the list (no such
// job). A job whose entry was not written (ingest died between the
// two writes, or JOBINDEX refused it) is still run and readable by id, just
// not listed. A keyed retry writes the entry again (de-duplicated within
// the window), which repairs such a gap. docs/design.md#listing-a-users-jobs

// indexMsg is the JOBINDEX entry of job, whose stored message is body.
func indexMsg(job envelope.Job, body []byte) *nats.Msg {
	m := nats.NewMsg(envelope.IndexSubject(job.User, job.Kind))
	m.Data = body
	m.Header.Set(envelope.HeaderMsgID, job.ID)
	return m
}

// indexEntryOf is the index entry of job: its envelope as JOBS stores it.
func (s *Service) indexEntryOf(job envelope.Job) (*nats.Msg, error) {
	b, err := envelope.EncodeJob(job, s.cfg.Source)
	if err != nil {
		return nil, err
	}
	return indexMsg(job, b), nil
}

// index writes the entry of one accepted job and waits for its PubAck.
// body is the job's stored envelope, nil to encode it again. A failure is
// logged, not answered: the job is stored and runs.
func (s *Service) index(ctx context.Context, job envelope.Job, body []byte) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	var m *nats.Msg
	var err error
	if body != nil {
		m = indexMsg(job, body)
	} else {
		m, err = s.indexEntryOf(job)
	}
	if err == nil {
		m.Header.Set(jetstream.ExpectedStreamHeader, streams.JobIndex)
		_, err = natsx.Publish(ctx, s.nc, m)
	}
	if err != nil {
		s.metrics.unindexed.Inc()
		jobLog{log: s.log, ctx: ctx, job: job.ID, user: job.User, kind: job.Kind}.at(slog.LevelWarn, "job stored but not indexed: it will not be listed", "err", err)
	}
}
