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

// A publish that times out uses the whole request deadline; the refused
// job's queued snapshot (written alongside) must still be deleted, under a
// context of its own.
func TestRefusedJobSnapshotDeletedAfterPublishTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	fakeJobs(t, h, func(*nats.Msg, envelope.Job) {}) // swallows the job: the publish times out
	r := h.submit(token(t, "alice"), `{"kind":"image"}`)
	if r.Status != http.StatusServiceUnavailable || r.errorCode(t) != CodeUnavailable {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if keys := liveKeys(t, h); len(keys) != 0 {
		t.Fatalf("a refused job left its snapshot: %v", keys)
	}
}

// A failed publish is not always a refusal: the message may be stored and a
// processor may already have written the job. The cleanup must not erase
// that: it deletes only the revision it created.
func TestRefusedJobSnapshotKeptWhenWrittenSince(t *testing.T) {
	h := newHarness(t, nil)
	ids := make(chan string, 1)
	fakeJobs(t, h, func(m *nats.Msg, job envelope.Job) {
		// Act as a processor that got the job: wait for the queued
		// snapshot, move it to running, then answer with an error.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, _, err := h.store.Get(context.Background(), job.ID); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("queued snapshot of %s never written", job.ID)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := h.store.Apply(context.Background(), job.ID, nil, envelope.TypeStarted, func(s *envelope.Snapshot) error {
			s.Status, s.Attempt = envelope.StatusRunning, 1
			return nil
		}); err != nil {
			t.Errorf("apply: %v", err)
		}
		ids <- job.ID
		_ = m.Respond([]byte(`{"error":{"code":503,"err_code":10999,"description":"test: ambiguous failure"}}`))
	})
	r := h.submit(token(t, "alice"), `{"kind":"image"}`)
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	id := <-ids
	snap, _, err := h.store.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("the processor's snapshot was deleted: %v", err)
	}
	if snap.Status != envelope.StatusRunning || snap.Seq != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
}
