package jsm_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

func TestMain(m *testing.M) {
	// JOBS sources SCHEDULED; the server may leave its source setup waiting
	// for a consumer reply up to 30 s after a shutdown (nats-server stream.go).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

var allStreams = []string{streams.Jobs, streams.Events, streams.DLQ, "KV_" + streams.JobStatus}

func streamConfigs(t *testing.T, js jetstream.JetStream) map[string]jetstream.StreamInfo {
	t.Helper()
	out := map[string]jetstream.StreamInfo{}
	for _, name := range allStreams {
		s, err := js.Stream(ctxT(t), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		out[name] = *s.CachedInfo()
	}
	return out
}

func TestApplyStreamsCreatesAllAndIsIdempotent(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	first := streamConfigs(t, js)
	want := map[string]jetstream.RetentionPolicy{
		streams.Jobs: jetstream.WorkQueuePolicy, streams.Events: jetstream.LimitsPolicy,
		streams.DLQ: jetstream.LimitsPolicy, "KV_" + streams.JobStatus: jetstream.LimitsPolicy,
	}
	for name, ret := range want {
		info := first[name]
		if info.Config.Retention != ret || info.Config.Storage != jetstream.FileStorage || info.Config.Replicas != 1 {
			t.Errorf("%s: retention %s storage %s replicas %d", name, info.Config.Retention, info.Config.Storage, info.Config.Replicas)
		}
	}
	jobs := first[streams.Jobs].Config
	if jobs.Discard != jetstream.DiscardNew || jobs.MaxMsgs != 1_000_000 || jobs.Duplicates != 2*time.Minute ||
		!reflect.DeepEqual(jobs.Subjects, []string{"jobs.*.*", "jobs.*.*.*"}) {
		t.Errorf("JOBS config = %+v", jobs)
	}
	events := first[streams.Events].Config
	if events.MaxAge != 24*time.Hour || events.MaxMsgsPerSubject != 1000 || !reflect.DeepEqual(events.Subjects, []string{"events.*.*"}) {
		t.Errorf("EVENTS config = %+v", events)
	}

	for range 2 {
		if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
			t.Fatalf("ApplyStreams again: %v", err)
		}
	}
	again := streamConfigs(t, js)
	for _, name := range allStreams {
		a, b := first[name], again[name]
		if !reflect.DeepEqual(a.Config, b.Config) {
			t.Errorf("%s config changed on re-apply:\n%+v\n%+v", name, a.Config, b.Config)
		}
		if !a.Created.Equal(b.Created) {
			t.Errorf("%s was re-created", name)
		}
	}
}

func TestApplyStreamsKeepsData(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "dlq.image", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, streams.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("DLQ holds %d messages after re-apply, want 1", n)
	}
}

func TestApplyStreamsConcurrently(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- jsm.ApplyStreams(ctx, js, jsm.Options{}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	streamConfigs(t, js)
}

func TestReplicasOverride(t *testing.T) {
	cfgs, err := jsm.Streams(jsm.Options{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 6 {
		t.Fatalf("%d stream definitions, want 6", len(cfgs))
	}
	for _, c := range cfgs {
		if c.Replicas != 3 {
			t.Errorf("%s replicas = %d, want 3", c.Name, c.Replicas)
		}
	}
	cfgs, err = jsm.Streams(jsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfgs {
		if c.Replicas != 1 {
			t.Errorf("%s replicas = %d without override, want the file's 1", c.Name, c.Replicas)
		}
	}

	// A single server cannot hold R3 streams: the error says so and names
	// the stream.
	js := newJS(t)
	err = jsm.ApplyStreams(ctxT(t), js, jsm.Options{Replicas: 3})
	if err == nil {
		t.Fatal("ApplyStreams with 3 replicas on a single server succeeded")
	}
	// SCHEDULED is applied first (JOBS sources it).
	if msg := err.Error(); !strings.Contains(msg, "SCHEDULED") || !strings.Contains(strings.ToLower(msg), "replicas") {
		t.Fatalf("error %q should name the stream and the replica problem", msg)
	}
	t.Logf("R3 on a single server: %v", err)
}

func TestIncompatibleExistingStream(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	// Someone created JOBS by hand with the wrong retention.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streams.Jobs, Subjects: []string{"jobs.*.*"}, Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	err := jsm.ApplyStreams(ctx, js, jsm.Options{})
	if !errors.Is(err, jsm.ErrIncompatible) {
		t.Fatalf("ApplyStreams = %v, want ErrIncompatible", err)
	}
	if !strings.Contains(err.Error(), "JOBS") || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("error %q should name the stream and what differs", err)
	}
	// Nothing was forced through.
	s, err := js.Stream(ctx, streams.Jobs)
	if err != nil {
		t.Fatal(err)
	}
	if s.CachedInfo().Config.Retention != jetstream.LimitsPolicy {
		t.Fatal("the existing stream was changed")
	}
}

func TestIncompatibleStorage(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streams.DLQ, Subjects: []string{"dlq.*"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	err := jsm.ApplyStreams(ctx, js, jsm.Options{})
	if !errors.Is(err, jsm.ErrIncompatible) || !strings.Contains(err.Error(), "DLQ") {
		t.Fatalf("ApplyStreams = %v, want ErrIncompatible naming DLQ", err)
	}
}

func TestCompatibleChangeIsApplied(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	// An older EVENTS with a shorter max age is updated in place.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streams.Events, Subjects: []string{"events.*.*"}, Storage: jetstream.FileStorage, MaxAge: time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, streams.Events)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 24*time.Hour {
		t.Fatalf("EVENTS max age = %v after apply, want 24h", got)
	}
}

func TestApplyConsumer(t *testing.T) {
	_, _, js := natstest.StartWithStreams(t)
	ctx := ctxT(t)
	for _, kind := range []string{"image", "video", "audio"} {
		for _, p := range envelope.Priorities {
			c, err := jsm.ApplyConsumer(ctx, js, p, kind, nil)
			if err != nil {
				t.Fatalf("ApplyConsumer(%s, %s): %v", p, kind, err)
			}
			cfg := c.CachedInfo().Config
			name := "proc-" + string(p) + "-" + kind
			if cfg.Durable != name || c.CachedInfo().Name != name || jsm.ConsumerName(p, kind) != name {
				t.Errorf("durable = %q, want %q", cfg.Durable, name)
			}
			if want := []string{envelope.JobSubject(p, kind) + ".*"}; !reflect.DeepEqual(cfg.FilterSubjects, want) || cfg.FilterSubject != "" {
				t.Errorf("%s filters = %q %q, want %q", name, cfg.FilterSubject, cfg.FilterSubjects, want)
			}
			if cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.AckWait != 30*time.Second ||
				cfg.MaxDeliver != -1 || cfg.MaxAckPending != 64 {
				t.Errorf("%s config = %+v", name, cfg)
			}
			if !strings.Contains(cfg.Description, kind) || (kind != "image" && strings.Contains(cfg.Description, "image")) {
				t.Errorf("%s description = %q", name, cfg.Description)
			}
		}
	}
	// Re-applying, with a mutation, updates in place.
	c, err := jsm.ApplyConsumer(ctx, js, envelope.PriorityNormal, "audio", func(cfg *jetstream.ConsumerConfig) { cfg.MaxAckPending = 8 })
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.MaxAckPending; got != 8 {
		t.Fatalf("max_ack_pending = %d after mutate, want 8", got)
	}
	// The consumer actually delivers its kind only.
	for _, subj := range []string{"jobs.normal.image", "jobs.normal.audio"} {
		if _, err := js.Publish(ctx, subj, []byte(subj)); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		// Published to the queue's subject, stored under its QueueToken.
		if m.Subject() != "jobs.normal.audio."+envelope.QueueToken {
			t.Errorf("audio consumer got %s", m.Subject())
		}
		if err := m.Ack(); err != nil {
			t.Error(err)
		}
	}
}

// A failure that is not the server refusing the definition (here a
// cancelled ctx) must not be reported as ErrIncompatible.
func TestTransientErrorIsNotIncompatible(t *testing.T) {
	_, _, js := natstest.StartWithStreams(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := jsm.ApplyConsumer(ctx, js, envelope.PriorityHigh, "image", nil)
	if err == nil || errors.Is(err, jsm.ErrIncompatible) || !errors.Is(err, context.Canceled) {
		t.Fatalf("ApplyConsumer(cancelled) = %v; want context.Canceled, not ErrIncompatible", err)
	}
	// While a real refusal is: an existing durable's ack policy cannot change.
	if _, err := jsm.ApplyConsumer(ctxT(t), js, envelope.PriorityHigh, "image", nil); err != nil {
		t.Fatal(err)
	}
	_, err = jsm.ApplyConsumer(ctxT(t), js, envelope.PriorityHigh, "image", func(c *jetstream.ConsumerConfig) {
		c.AckPolicy = jetstream.AckAllPolicy
	})
	if !errors.Is(err, jsm.ErrIncompatible) || !strings.Contains(err.Error(), "proc-high-image") {
		t.Fatalf("ApplyConsumer(ack policy changed) = %v; want ErrIncompatible naming the consumer", err)
	}
	t.Logf("refusal: %v", err)
}

func TestConsumerDefinitions(t *testing.T) {
	for _, kind := range []string{"Audio", "a.b", "", "*"} {
		if _, err := jsm.Consumer(envelope.PriorityNormal, kind); !errors.Is(err, envelope.ErrInvalidToken) {
			t.Errorf("Consumer(normal, %q) = %v, want ErrInvalidToken", kind, err)
		}
	}
	if _, err := jsm.Consumer("urgent", "image"); !errors.Is(err, envelope.ErrInvalidToken) {
		t.Errorf("Consumer(urgent) = %v, want ErrInvalidToken", err)
	}
	// Derived definitions differ from the template only in names.
	for _, p := range envelope.Priorities {
		img, err := jsm.Consumer(p, "image")
		if err != nil {
			t.Fatal(err)
		}
		aud, err := jsm.Consumer(p, "audio")
		if err != nil {
			t.Fatal(err)
		}
		q := "jobs." + string(p) + ".audio"
		if aud.Durable != "proc-"+string(p)+"-audio" || !reflect.DeepEqual(aud.FilterSubjects, []string{q + ".*"}) {
			t.Errorf("derived %s: %+v", p, aud)
		}
		aud.Durable, aud.FilterSubjects, aud.Description = img.Durable, img.FilterSubjects, img.Description
		if !reflect.DeepEqual(img, aud) {
			t.Errorf("derived %s differs from the template beyond names:\n%+v\n%+v", p, img, aud)
		}
	}
}

func TestJobStatusKV(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	if _, err := jsm.JobStatus(ctx, js); err == nil {
		t.Fatal("JobStatus before ApplyStreams succeeded")
	}
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	kv, err := jsm.JobStatus(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if kv.Bucket() != streams.JobStatus {
		t.Fatalf("bucket = %q", kv.Bucket())
	}
	rev, err := kv.Create(ctx, "job-1", []byte(`{"status":"queued"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "job-1", []byte(`{}`)); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("second Create = %v, want ErrKeyExists", err)
	}
	rev2, err := kv.Update(ctx, "job-1", []byte(`{"status":"running"}`), rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "job-1", []byte(`{"status":"failed"}`), rev); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("stale Update = %v, want ErrKeyRevisionMismatch", err)
	}
	e, err := kv.Get(ctx, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != rev2 || string(e.Value()) != `{"status":"running"}` {
		t.Fatalf("Get = rev %d %s", e.Revision(), e.Value())
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 1 || st.TTL() != 7*24*time.Hour {
		t.Errorf("KV history %d ttl %v", st.History(), st.TTL())
	}
	// Watching works (the notifier relies on it).
	w, err := kv.Watch(ctx, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	select {
	case e := <-w.Updates():
		if e == nil || e.Revision() != rev2 {
			t.Fatalf("watch first entry = %v", e)
		}
	case <-ctx.Done():
		t.Fatal("watch gave nothing")
	}
}

// TestRetentionOptions: -events-max-age, -status-ttl and -dlq-max-age reach
// the streams when they are applied (and again on a restart with other
// values); a negative one is refused.
func TestRetentionOptions(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	for _, opts := range []jsm.Options{
		{EventsMaxAge: 2 * time.Hour, StatusTTL: 48 * time.Hour, DLQMaxAge: 72 * time.Hour},
		{EventsMaxAge: 3 * time.Hour, StatusTTL: 24 * time.Hour, DLQMaxAge: 96 * time.Hour},
	} {
		if err := jsm.ApplyStreams(ctx, js, opts); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]time.Duration{
			streams.Events: opts.EventsMaxAge, "KV_" + streams.JobStatus: opts.StatusTTL,
			streams.JobIndex: opts.StatusTTL, streams.DLQ: opts.DLQMaxAge, streams.Jobs: 0,
		} {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.CachedInfo().Config.MaxAge; got != want {
				t.Errorf("%s max_age %v, want %v", name, got, want)
			}
		}
	}
	if _, err := jsm.Streams(jsm.Options{DLQMaxAge: -time.Hour}); !errors.Is(err, jsm.ErrDefinition) {
		t.Fatalf("negative retention: %v", err)
	}
}

// A JOBS from before its subject transform stored jobs published to a
// queue's subject under that subject itself. The consumer takes them while
// they last, and narrows to its one filter once they are gone.
func TestConsumerTakesQueueMessagesStoredBeforeTheTransform(t *testing.T) {
	_, _, js := natstest.StartWithStreams(t)
	ctx := ctxT(t)
	jobsCfg := func() jetstream.StreamConfig {
		cfgs, err := jsm.Streams(jsm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cfgs {
			if c.Name == streams.Jobs {
				return c
			}
		}
		t.Fatal("no JOBS definition")
		return jetstream.StreamConfig{}
	}
	old := jobsCfg()
	if old.SubjectTransform == nil {
		t.Fatal("JOBS has no subject transform")
	}
	old.SubjectTransform = nil
	if _, err := js.UpdateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	publish := func(subj string) {
		t.Helper()
		if _, err := js.Publish(ctx, subj, []byte(subj)); err != nil {
			t.Fatal(err)
		}
	}
	publish("jobs.normal.image")    // stored as it is: the old definition
	publish("jobs.normal.image.j1") // a job subject
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	publish("jobs.normal.image") // stored under the QueueToken

	fetchAll := func(c jetstream.Consumer, n int) []string {
		t.Helper()
		var got []string
		batch, err := c.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			got = append(got, m.Subject())
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return got
	}
	c, err := jsm.ApplyConsumer(ctx, js, envelope.PriorityNormal, "image", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.CachedInfo().Config.FilterSubjects, []string{"jobs.normal.image.*", "jobs.normal.image"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("filters with a stranded queue message = %q, want %q", got, want)
	}
	want := []string{"jobs.normal.image", "jobs.normal.image.j1", "jobs.normal.image." + envelope.QueueToken}
	if got := fetchAll(c, 10); !reflect.DeepEqual(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}

	// Drained: re-applied, the consumer narrows, and still takes the queue.
	c, err = jsm.ApplyConsumer(ctx, js, envelope.PriorityNormal, "image", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.CachedInfo().Config.FilterSubjects, []string{"jobs.normal.image.*"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("filters once drained = %q, want %q", got, want)
	}
	publish("jobs.normal.image")
	if got, want := fetchAll(c, 10), []string{"jobs.normal.image." + envelope.QueueToken}; !reflect.DeepEqual(got, want) {
		t.Fatalf("delivered %q after narrowing, want %q", got, want)
	}
}
