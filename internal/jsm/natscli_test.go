package jsm_test

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

func streamFiles(t *testing.T) (streamsDir string, files, consumers []string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "streams"))
	if err != nil {
		t.Fatal(err)
	}
	files, err = filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) != 7 { // the four every binary applies, WEBHOOKS, JOBINDEX and SCHEDULED
		t.Fatalf("stream files: %v %v", files, err)
	}
	consumers, err = filepath.Glob(filepath.Join(dir, "consumers", "*.json"))
	if err != nil || len(consumers) == 0 {
		t.Fatalf("consumer files: %v %v", consumers, err)
	}
	return dir, files, consumers
}

// TestNATSCLIAcceptsStreamFiles is the "Done when" of issue 2: the real nats
// CLI accepts every file in streams/, and what it creates is what the
// binaries create through jsm.
func TestNATSCLIAcceptsStreamFiles(t *testing.T) {
	srv := natstest.Start(t)
	c := natstest.NewCLI(t, srv.ClientURL())
	_, files, consumers := streamFiles(t)
	for _, f := range files {
		c.Run(t, "stream", "add", "--config", f)
	}
	for _, f := range consumers {
		c.Run(t, "consumer", "add", streams.Jobs, "--config", f)
	}

	ls := c.Run(t, "stream", "ls", "--names")
	for _, name := range allStreams {
		if !strings.Contains(ls, name) {
			t.Errorf("nats stream ls does not list %s:\n%s", name, ls)
		}
	}
	cls := c.Run(t, "consumer", "ls", streams.Jobs, "--names")
	for _, f := range consumers {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		if !strings.Contains(cls, name) {
			t.Errorf("nats consumer ls JOBS does not list %s:\n%s", name, cls)
		}
	}

	// The KV bucket made from kv_job_status.json works with nats kv.
	c.Run(t, "kv", "put", streams.JobStatus, "job-1", `{"status":"queued"}`)
	if got := strings.TrimSpace(c.Run(t, "kv", "get", streams.JobStatus, "job-1", "--raw")); got != `{"status":"queued"}` {
		t.Errorf("nats kv get = %q", got)
	}

	// And the binaries accept what the CLI created, and read the same KV.
	ctx := ctxT(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatalf("ApplyStreams after the CLI: %v", err)
	}
	kv, err := jsm.JobStatus(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "job-1"); err != nil || string(e.Value()) != `{"status":"queued"}` {
		t.Fatalf("KV written by the CLI, read by jsm: %v %v", e, err)
	}

	// Same definitions as jsm.ApplyStreams on a fresh server.
	ref := newJS(t)
	if err := jsm.ApplyStreams(ctx, ref, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := jsm.ApplyWebhooks(ctx, js); err != nil {
		t.Fatalf("ApplyWebhooks after the CLI: %v", err)
	}
	if err := jsm.ApplyWebhooks(ctx, ref); err != nil {
		t.Fatal(err)
	}
	for _, name := range append(allStreams, streams.Webhooks) {
		byCLI, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		byJSM, err := ref.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := relevantStream(byCLI.CachedInfo().Config), relevantStream(byJSM.CachedInfo().Config); !reflect.DeepEqual(a, b) {
			t.Errorf("%s differs:\nCLI: %+v\njsm: %+v", name, a, b)
		}
	}
	for _, f := range consumers {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		parts := strings.SplitN(name, "-", 3) // proc-<p>-<kind>
		byCLI, err := js.Consumer(ctx, streams.Jobs, name)
		if err != nil {
			t.Fatal(err)
		}
		byJSM, err := jsm.ApplyConsumer(ctx, ref, envelope.Priority(parts[1]), parts[2], nil)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := relevantConsumer(byCLI.CachedInfo().Config), relevantConsumer(byJSM.CachedInfo().Config); !reflect.DeepEqual(a, b) {
			t.Errorf("consumer %s differs:\nCLI: %+v\njsm: %+v", name, a, b)
		}
	}
}

// relevantStream keeps what streams/ defines (not server-side metadata).
func relevantStream(c jetstream.StreamConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: c.Name, Description: c.Description, Subjects: c.Subjects, Retention: c.Retention,
		MaxConsumers: c.MaxConsumers, MaxMsgs: c.MaxMsgs, MaxBytes: c.MaxBytes, MaxAge: c.MaxAge,
		MaxMsgsPerSubject: c.MaxMsgsPerSubject, MaxMsgSize: c.MaxMsgSize, Discard: c.Discard,
		Storage: c.Storage, Replicas: c.Replicas, Duplicates: c.Duplicates, AllowRollup: c.AllowRollup,
		AllowDirect: c.AllowDirect, DenyDelete: c.DenyDelete, DenyPurge: c.DenyPurge, NoAck: c.NoAck,
		RePublish: c.RePublish,
	}
}

func relevantConsumer(c jetstream.ConsumerConfig) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: c.Durable, Description: c.Description, FilterSubject: c.FilterSubject, FilterSubjects: c.FilterSubjects,
		DeliverPolicy: c.DeliverPolicy, AckPolicy: c.AckPolicy, AckWait: c.AckWait, MaxDeliver: c.MaxDeliver,
		MaxAckPending: c.MaxAckPending, MaxWaiting: c.MaxWaiting, ReplayPolicy: c.ReplayPolicy, Replicas: c.Replicas,
	}
}
