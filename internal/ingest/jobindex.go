package ingest

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// A job is listed (GET /v1/jobs) through its entry in JOBINDEX,
// jobindex.<user>.<kind>. A single submission, a schedule's firing, a
// rerun and a batch's keyed item write an entry of their own: body the
// job's submitted envelope (what a rerun runs again: JOBS forgets a job
// once it is done), Nats-Msg-Id the job id, written after the job's
// PubAck (a batch's right behind its job), so a keyed retry writes it
// again (de-duplicated within the window), which repairs a missing one.
// A batch's unkeyed items share bundles (envelope.HeaderIndexBundle): one
// entry per (user, kind) and chunk, pipelined behind the jobs; a job the
// bundle names but JOBS refused is skipped by the list (no such job). A
// job whose entry was not written (ingest died between the two writes, or
// JOBINDEX refused it) is still run and readable by id, just not listed.
// docs/design.md#listing-a-users-jobs

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

// Bounds of one bundle, a chunk of a batch's unkeyed jobs of one (user,
// kind): at most maxBundleJobs jobs and about maxBundleBytes of body (a
// job whose envelope alone is larger gets an entry of its own), well
// under the server's max_payload (1 MiB by default, 2 MiB in nats.conf).
// docs/design.md#batches
const (
	maxBundleJobs  = 100
	maxBundleBytes = 128 << 10
)

// indexBundle is the open chunk of one (user, kind).
type indexBundle struct {
	user, kind string
	first      envelope.Job // its first job and envelope: a chunk of one is a single entry
	firstEnv   []byte
	n          int
	body       []byte
}

// sentBundle is a bundle published, awaiting its PubAck (its index in
// the batch's PubBatch).
type sentBundle struct {
	k          int
	user, kind string
	n          int
}

// indexBundler gathers a batch's unkeyed jobs into bundles and publishes
// each as soon as it is full (pipelined behind its jobs), the rest at
// flush.
type indexBundler struct {
	pb    *natsx.PubBatch // the batch's publisher
	last  *indexBundle
	open  map[string]*indexBundle
	order []*indexBundle
	sent  []sentBundle
}

// add puts job, whose stored envelope is env, into its (user, kind)'s
// bundle, publishing the bundle when it is full.
func (x *indexBundler) add(s *Service, job envelope.Job, env []byte) {
	g := x.last
	if g == nil || g.user != job.User || g.kind != job.Kind {
		if x.open == nil {
			x.open = make(map[string]*indexBundle)
		}
		key := job.User + "\x00" + job.Kind
		if g = x.open[key]; g == nil {
			g = &indexBundle{user: job.User, kind: job.Kind}
			x.open[key] = g
			x.order = append(x.order, g)
		}
		x.last = g
	}
	size := envelope.IndexRecordSize(job.ID, env)
	if g.n > 0 && len(g.body)+size > maxBundleBytes {
		x.send(s, g)
	}
	if g.n == 0 {
		g.first, g.firstEnv = job, env
		g.body = make([]byte, 0, min(maxBundleBytes, size*maxBundleJobs)+size)
	}
	g.body = envelope.AppendIndexRecord(g.body, job.ID, env)
	g.n++
	if g.n >= maxBundleJobs {
		x.send(s, g)
	}
}

// flush publishes every bundle not yet sent.
func (x *indexBundler) flush(s *Service) {
	for _, g := range x.order {
		if g.n > 0 {
			x.send(s, g)
		}
	}
}

// send publishes g's chunk without waiting and opens the next.
func (x *indexBundler) send(s *Service, g *indexBundle) {
	var m *nats.Msg
	if g.n == 1 {
		m = indexMsg(g.first, g.firstEnv)
	} else {
		m = nats.NewMsg(envelope.IndexSubject(g.user, g.kind))
		m.Data = g.body
		m.Header.Set(envelope.HeaderIndexBundle, strconv.Itoa(g.n))
	}
	m.Header.Set(jetstream.ExpectedStreamHeader, streams.JobIndex)
	k, err := x.pb.Publish(m)
	if err != nil {
		s.notIndexed(g.user, g.kind, g.n, err)
	} else {
		x.sent = append(x.sent, sentBundle{k: k, user: g.user, kind: g.kind, n: g.n})
	}
	g.n, g.body, g.first, g.firstEnv = 0, nil, envelope.Job{}, nil
}

// await reads the PubAcks of the bundles sent, which the batch's
// PubBatch waited for.
func (x *indexBundler) await(ctx context.Context, s *Service) {
	for _, b := range x.sent {
		if _, err := x.pb.Result(ctx, b.k); err != nil {
			s.notIndexed(b.user, b.kind, b.n, err)
		}
	}
}

// notIndexed counts and logs n stored jobs of a bundle whose entry was
// not written.
func (s *Service) notIndexed(user, kind string, n int, err error) {
	s.metrics.unindexed.Add(float64(n))
	s.log.Warn("jobs not indexed: they will not be listed", "user", user, "kind", kind, "jobs", n, "err", err)
}
