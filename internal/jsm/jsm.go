// Package jsm applies the JetStream definitions of streams/ idempotently: a
// stream or consumer that is missing is created, one that exists is updated
// when the change is compatible, and an incompatible change (a different
// retention or storage, say) is refused with ErrIncompatible instead of being
// forced through.
package jsm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// Sentinel errors.
var (
	// ErrIncompatible: the server holds a definition that cannot be changed
	// into the one in streams/ without deleting data.
	ErrIncompatible = errors.New("jsm: incompatible definition")
	// ErrDefinition: a file in streams/ cannot be read.
	ErrDefinition = errors.New("jsm: bad definition")
)

// streamFiles are applied in this order.
var streamFiles = []string{"scheduled.json", "jobs.json", "events.json", "dlq.json", "kv_job_status.json", "jobindex.json"}

// templateKind is the kind whose committed consumer files serve as the
// template for every other configured kind.
const templateKind = "image"

// Options tune what Apply writes. Zero values keep what the files say.
type Options struct {
	// Replicas overrides num_replicas of every stream (3 on a cluster).
	Replicas int
	// EventsMaxAge overrides how long EVENTS keeps events (file: 24 h).
	EventsMaxAge time.Duration
	// StatusTTL overrides how long job_status keeps a snapshot, and
	// JOBINDEX a job's entry, after its last change (files: 7 days).
	StatusTTL time.Duration
	// DLQMaxAge overrides how long the DLQ keeps a dead job (file: 30 days).
	DLQMaxAge time.Duration
}

// maxAge is the retention opts set for stream name, 0 to keep the file's.
func (o Options) maxAge(name string) time.Duration {
	switch name {
	case streams.Events:
		return o.EventsMaxAge
	case "KV_" + streams.JobStatus, streams.JobIndex:
		return o.StatusTTL
	case streams.DLQ:
		return o.DLQMaxAge
	}
	return 0
}

// Streams returns the stream definitions of streams/, with opts applied.
func Streams(opts Options) ([]jetstream.StreamConfig, error) {
	out := make([]jetstream.StreamConfig, 0, len(streamFiles))
	for _, f := range streamFiles {
		var cfg jetstream.StreamConfig
		if err := readJSON(f, &cfg); err != nil {
			return nil, err
		}
		if opts.Replicas > 0 {
			cfg.Replicas = opts.Replicas
		}
		switch age := opts.maxAge(cfg.Name); {
		case age < 0:
			return nil, fmt.Errorf("%w: %s: a retention must be > 0, not %v", ErrDefinition, cfg.Name, age)
		case age > 0:
			cfg.MaxAge = age
		}
		out = append(out, cfg)
	}
	return out, nil
}

// ConsumerName is the durable name of the processor's consumer for one
// priority and kind: proc-<priority>-<kind>.
func ConsumerName(p envelope.Priority, kind string) string {
	return "proc-" + string(p) + "-" + kind
}

// ConsumerFilters are the subjects the consumer for p and kind takes:
// jobs.<priority>.<kind>.* (envelope.JobFilter), which holds the job
// subjects and, through JOBS's subject transform, the jobs published to the
// kind's queue subject. One filter, not two: a lookup that starts at the
// stream's first message walks every subject of JOBS (one per queued job),
// and with several filters nats-server intersects them with that walk, at
// about three times the cost of matching one (BENCHMARKS.md, run Y).
// ApplyConsumer adds the queue subject itself when, as it applies the
// consumer, JOBS still holds messages stored under it before the transform
// existed.
func ConsumerFilters(p envelope.Priority, kind string) []string {
	return []string{envelope.JobFilter(p, kind)}
}

// Consumer returns the definition of the durable consumer for p and kind:
// the committed file when there is one, otherwise the template of the same
// priority with its names rewritten.
func Consumer(p envelope.Priority, kind string) (jetstream.ConsumerConfig, error) {
	var cfg jetstream.ConsumerConfig
	if err := envelope.ValidateKind(kind); err != nil {
		return cfg, err
	}
	if err := envelope.ValidatePriority(p); err != nil {
		return cfg, err
	}
	name := ConsumerName(p, kind)
	err := readJSON(path.Join("consumers", name+".json"), &cfg)
	if errors.Is(err, fs.ErrNotExist) {
		if err = readJSON(path.Join("consumers", ConsumerName(p, templateKind)+".json"), &cfg); err == nil {
			cfg.Durable = name
			cfg.FilterSubjects = ConsumerFilters(p, kind)
			cfg.Description = strings.Replace(cfg.Description, templateKind, kind, 1)
		}
	}
	return cfg, err
}

func readJSON(name string, v any) error {
	b, err := streams.FS.ReadFile(name)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrDefinition, name, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDefinition, name, err)
	}
	return nil
}

// ApplyStreams creates or updates JOBS, EVENTS, DLQ, the job_status KV
// bucket and JOBINDEX. It is safe to call from many processes at once.
func ApplyStreams(ctx context.Context, js jetstream.JetStream, opts Options) error {
	cfgs, err := Streams(opts)
	if err != nil {
		return err
	}
	for _, cfg := range cfgs {
		if err := applyStream(ctx, js, cfg); err != nil {
			return err
		}
	}
	return nil
}

func applyStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	for range 3 { // a concurrent creator can win the race; then update
		s, err := js.Stream(ctx, cfg.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			_, err = js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue
			}
			if err != nil {
				return fmt.Errorf("jsm: create stream %s: %w", cfg.Name, err)
			}
			return nil
		case err != nil:
			return fmt.Errorf("jsm: look up stream %s: %w", cfg.Name, err)
		}
		have := s.CachedInfo().Config
		if have.Retention != cfg.Retention {
			return fmt.Errorf("%w: stream %s has retention %s, streams/ wants %s (delete or migrate it first)",
				ErrIncompatible, cfg.Name, have.Retention, cfg.Retention)
		}
		if have.Storage != cfg.Storage {
			return fmt.Errorf("%w: stream %s has %s storage, streams/ wants %s",
				ErrIncompatible, cfg.Name, have.Storage, cfg.Storage)
		}
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("%w: update stream %s: %w", rejected(err), cfg.Name, err)
		}
		return nil
	}
	return fmt.Errorf("jsm: stream %s: gave up after concurrent creates", cfg.Name)
}

// ApplyConsumer creates or updates one durable consumer on JOBS. mutate, if
// not nil, adjusts the definition first (the processor sizes
// max_ack_pending from its worker count).
func ApplyConsumer(ctx context.Context, js jetstream.JetStream, p envelope.Priority, kind string,
	mutate func(*jetstream.ConsumerConfig)) (jetstream.Consumer, error) {
	cfg, err := Consumer(p, kind)
	if err != nil {
		return nil, err
	}
	if mutate != nil {
		mutate(&cfg)
	}
	stranded, err := queueSubjectHolds(ctx, js, p, kind)
	if err != nil {
		return nil, err
	}
	if stranded {
		cfg.FilterSubjects = append(cfg.FilterSubjects, envelope.JobSubject(p, kind))
	}
	c, err := js.CreateOrUpdateConsumer(ctx, streams.Jobs, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: consumer %s: %w", rejected(err), cfg.Durable, err)
	}
	return c, nil
}

// queueSubjectHolds reports whether JOBS holds messages under the queue
// subject of p and kind itself (jobs.<priority>.<kind>): ones stored by a
// JOBS from before its subject transform, which the one filter of
// ConsumerFilters does not match. The consumer takes them too while they
// last; re-applied once they are gone (a processor's restart), it narrows to
// the one filter. Nothing can be stored there again while the transform is
// in place.
func queueSubjectHolds(ctx context.Context, js jetstream.JetStream, p envelope.Priority, kind string) (bool, error) {
	q := envelope.JobSubject(p, kind)
	s, err := js.Stream(ctx, streams.Jobs)
	if err != nil {
		// Only a missing JOBS is the definition's problem; an outage (no
		// meta leader, the stream offline) is transient, and a puller
		// re-applying its consumer must keep backing off in place.
		cause := errTransient
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			cause = ErrIncompatible
		}
		return false, fmt.Errorf("%w: look up stream %s: %w", cause, streams.Jobs, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(q))
	if err != nil {
		return false, fmt.Errorf("%w: count %s in stream %s: %w", errTransient, q, streams.Jobs, err)
	}
	return info.State.Subjects[q] > 0, nil
}

// rejected classifies a failed create or update: the server refusing the
// definition (an API error) is ErrIncompatible; anything else (a timeout, a
// lost connection, a cancelled ctx) is transient and must not tell the
// operator to delete a stream.
func rejected(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return ErrIncompatible
	}
	return errTransient
}

// errTransient prefixes errors that are not about the definition.
var errTransient = errors.New("jsm: not applied")

// JobStatus opens the job_status KV bucket (ApplyStreams must have run).
func JobStatus(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, streams.JobStatus)
	if err != nil {
		return nil, fmt.Errorf("jsm: open KV %s: %w", streams.JobStatus, err)
	}
	return kv, nil
}

// SetupTimeout bounds the stream setup a service does when it starts
// (Setup): a cluster that cannot answer by then is reported, not waited for.
const SetupTimeout = 30 * time.Second

// Setup is ApplyStreams under SetupTimeout, as every binary starts.
func Setup(ctx context.Context, js jetstream.JetStream, opts Options) error {
	ctx, cancel := context.WithTimeout(ctx, SetupTimeout)
	defer cancel()
	return ApplyStreams(ctx, js, opts)
}

// jobHandlesFile defines the job_handles bucket (streams.JobHandles).
const jobHandlesFile = "processor/kv_job_handles.json"

// JobHandles creates or updates the job_handles KV bucket and opens it. Its
// replicas are those of the job_status bucket (ApplyStreams must have run),
// so it is as durable as the job states it goes with. Only the processor
// calls it, when a provider of its resumes remote work.
func JobHandles(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	var cfg jetstream.StreamConfig
	if err := readJSON(jobHandlesFile, &cfg); err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, "KV_"+streams.JobStatus)
	if err != nil {
		return nil, fmt.Errorf("jsm: look up stream KV_%s: %w", streams.JobStatus, err)
	}
	cfg.Replicas = st.CachedInfo().Config.Replicas
	if err := applyStream(ctx, js, cfg); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, streams.JobHandles)
	if err != nil {
		return nil, fmt.Errorf("jsm: open KV %s: %w", streams.JobHandles, err)
	}
	return kv, nil
}

// webhooksFile defines the WEBHOOKS stream (streams.Webhooks).
const webhooksFile = "webhooks.json"

// ApplyWebhooks creates or updates the WEBHOOKS stream, with the replicas
// of the job_status bucket (ApplyStreams must have run). Ingest, which
// stores webhook deliveries, and the processor, which reads them, call it;
// no other service touches the stream.
func ApplyWebhooks(ctx context.Context, js jetstream.JetStream) error {
	var cfg jetstream.StreamConfig
	if err := readJSON(webhooksFile, &cfg); err != nil {
		return err
	}
	st, err := js.Stream(ctx, "KV_"+streams.JobStatus)
	if err != nil {
		return fmt.Errorf("jsm: look up stream KV_%s: %w", streams.JobStatus, err)
	}
	cfg.Replicas = st.CachedInfo().Config.Replicas
	return applyStream(ctx, js, cfg)
}
