package ingest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// fakeJobs replaces JOBS with a core-NATS responder on jobs.>: handle gets
// each job message and decides the answer (nil: never answer).
func fakeJobs(t *testing.T, h *harness, handle func(m *nats.Msg, job envelope.Job)) {
	t.Helper()
	if err := h.js.DeleteStream(context.Background(), streams.Jobs); err != nil {
		t.Fatal(err)
	}
	sub, err := h.nc.Subscribe("jobs.>", func(m *nats.Msg) {
		_, job, err := envelope.DecodeJob(m.Data)
		if err != nil {
			t.Errorf("job message: %v", err)
			return
		}
		handle(m, job)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// liveKeys is the job_status keys that hold a value (not deleted).
func liveKeys(t *testing.T, h *harness) []string {
	t.Helper()
	kv, err := jsm.JobStatus(context.Background(), h.js)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(context.Background())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// A refused job leaves nothing behind: a submission's only write is its
// JOBS message, so a publish that times out (the message swallowed) stores
// no snapshot.
func TestRefusedJobLeavesNothing(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	fakeJobs(t, h, func(*nats.Msg, envelope.Job) {}) // swallows the job: the publish times out
	r := h.submit(token(t, "alice"), `{"kind":"image"}`)
	if r.Status != http.StatusServiceUnavailable || r.errorCode(t) != CodeUnavailable {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if keys := liveKeys(t, h); len(keys) != 0 {
		t.Fatalf("a refused job left a snapshot: %v", keys)
	}
}
