package ingest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

func TestSubmitHappyPath(t *testing.T) {
	h := newHarness(t, nil)
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := h.submit(token(t, "alice"), `{"kind":"image","priority":"high","input":{"prompt":"a lighthouse"}}`,
		withHeader("traceparent", tp))
	if r.Status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	snap := r.snapshot(t)
	if snap.User != "alice" || snap.Kind != "image" || snap.Priority != envelope.PriorityHigh ||
		snap.Status != envelope.StatusQueued || snap.Seq != 0 {
		t.Fatalf("snapshot %+v", snap)
	}
	if err := envelope.ValidateID("id", snap.ID); err != nil || len(snap.ID) < 20 {
		t.Fatalf("id %q: %v", snap.ID, err)
	}
	if loc := r.Header.Get("Location"); loc != "/v1/jobs/"+snap.ID {
		t.Fatalf("Location %q", loc)
	}

	// The job is in JOBS, on its subject, with its id as Nats-Msg-Id and
	// the caller's traceparent.
	s, err := h.js.Stream(context.Background(), streams.Jobs)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(context.Background(), "jobs.high.image."+snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get(envelope.HeaderMsgID); got != snap.ID {
		t.Errorf("Nats-Msg-Id %q, want %q", got, snap.ID)
	}
	if got := msg.Header.Get(envelope.HeaderTraceparent); got != tp {
		t.Errorf("traceparent %q, want %q", got, tp)
	}
	_, job, err := envelope.DecodeJob(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if job.ID != snap.ID || job.User != "alice" || string(job.Input) != `{"prompt":"a lighthouse"}` {
		t.Errorf("job %+v input %s", job, job.Input)
	}

	// No snapshot is stored for a queued job (the JOBS message is its one
	// write), and GET reads it from JOBS.
	if _, _, err := h.store.Get(context.Background(), snap.ID); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("a queued snapshot was stored: %v", err)
	}
	g := h.do(http.MethodGet, "/v1/jobs/"+snap.ID, nil, bearer(token(t, "alice")))
	if g.Status != http.StatusOK {
		t.Fatalf("GET %d: %s", g.Status, g.Body)
	}
	if got := g.snapshot(t); got.ID != snap.ID || got.User != "alice" || got.Kind != "image" ||
		got.Priority != envelope.PriorityHigh || got.Status != envelope.StatusQueued || got.Seq != 0 ||
		!got.CreatedAt.Equal(snap.CreatedAt) || !got.UpdatedAt.Equal(snap.CreatedAt) {
		t.Fatalf("GET %+v, want the 202's %+v", got, snap)
	}
	if got := h.metric("beamline_ingest_jobs_submitted_total", map[string]string{"kind": "image", "priority": "high"}); got != 1 {
		t.Errorf("jobs_submitted_total = %v", got)
	}
	if got := h.metric("beamline_ingest_requests_total", map[string]string{"route": routeSubmit, "code": "202"}); got != 1 {
		t.Errorf("requests_total{submit,202} = %v", got)
	}
}

func TestSubmitDefaults(t *testing.T) {
	h := newHarness(t, nil)
	r := h.submit(token(t, "alice"), `{"kind":"video"}`, withHeader("Content-Type", "application/json; charset=utf-8"),
		withHeader("traceparent", "not-a-traceparent"))
	if r.Status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	snap := r.snapshot(t)
	if snap.Priority != envelope.PriorityNormal {
		t.Fatalf("priority %q", snap.Priority)
	}
	s, _ := h.js.Stream(context.Background(), streams.Jobs)
	msg, err := s.GetLastMsgForSubject(context.Background(), "jobs.normal.video."+snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	if tp := msg.Header.Get(envelope.HeaderTraceparent); tp != "" {
		t.Errorf("an invalid traceparent was forwarded: %q", tp)
	}
	_, job, err := envelope.DecodeJob(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if string(job.Input) != `{}` {
		t.Errorf("input %s, want {}", job.Input)
	}
}

func TestSubmitIdempotency(t *testing.T) {
	h := newHarness(t, nil)
	alice, bob := token(t, "alice"), token(t, "bob")
	body := `{"kind":"image","input":{"n":1}}`

	first := h.submit(alice, body, withHeader("Idempotency-Key", "order-42"))
	if first.Status != http.StatusAccepted {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	id := first.snapshot(t).ID
	for i := range 3 {
		again := h.submit(alice, body, withHeader("Idempotency-Key", "order-42"))
		if again.Status != http.StatusAccepted {
			t.Fatalf("retry %d: %d %s", i, again.Status, again.Body)
		}
		if got := again.snapshot(t).ID; got != id {
			t.Fatalf("retry %d: id %q, want %q", i, got, id)
		}
		if loc := again.Header.Get("Location"); loc != "/v1/jobs/"+id {
			t.Fatalf("Location %q", loc)
		}
	}
	if n := h.jobsCount(); n != 1 {
		t.Fatalf("JOBS holds %d messages, want 1", n)
	}

	// The same key from another user is another job.
	other := h.submit(bob, body, withHeader("Idempotency-Key", "order-42"))
	if other.Status != http.StatusAccepted {
		t.Fatalf("bob: %d %s", other.Status, other.Body)
	}
	if other.snapshot(t).ID == id {
		t.Fatal("two users with the same key got the same job id")
	}
	if n := h.jobsCount(); n != 2 {
		t.Fatalf("JOBS holds %d messages, want 2", n)
	}
	if got := h.metric("beamline_ingest_jobs_submitted_total", nil); got != 2 {
		t.Errorf("jobs_submitted_total = %v, want 2 (duplicates are not counted)", got)
	}
}

// TestSubmitDuplicateWithinWindow covers the PubAck's duplicate flag: the
// job was published (by another ingest instance, say) but its snapshot is
// not in the KV yet, so the answer comes from the PubAck.
func TestSubmitDuplicateWithinWindow(t *testing.T) {
	h := newHarness(t, nil)
	id := keyedJobID("alice", "k1")
	msg, err := envelope.NewJobMsg(envelope.Job{ID: id, User: "alice", Kind: "image", Priority: "normal",
		CreatedAt: time.Now().UTC()}, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.PublishMsg(context.Background(), msg, jetstream.WithExpectStream(streams.Jobs)); err != nil {
		t.Fatal(err)
	}
	r := h.submit(token(t, "alice"), `{"kind":"image"}`, withHeader("Idempotency-Key", "k1"))
	if r.Status != http.StatusAccepted || r.snapshot(t).ID != id {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if n := h.jobsCount(); n != 1 {
		t.Fatalf("JOBS holds %d messages, want 1", n)
	}
}

// A keyed retry answers with the job as it is now: here a processor has
// moved it on since the first answer.
func TestSubmitIdempotentRetryReturnsCurrentSnapshot(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	first := h.submit(alice, `{"kind":"image"}`, withHeader("Idempotency-Key", "k2"))
	if first.Status != http.StatusAccepted {
		t.Fatalf("%d %s", first.Status, first.Body)
	}
	id := first.snapshot(t).ID
	// As a processor does: the job's first change creates its snapshot.
	queued, rev, err := h.store.Lookup(context.Background(), id)
	if err != nil || rev != jobstore.RevAbsent || queued.Status != envelope.StatusQueued {
		t.Fatalf("Lookup = %+v rev %d, %v", queued, rev, err)
	}
	if _, _, err := h.store.ApplyAt(context.Background(), queued, rev, envelope.TypeStarted, func(s *envelope.Snapshot) error {
		s.Status, s.Attempt = envelope.StatusRunning, 1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	again := h.submit(alice, `{"kind":"image"}`, withHeader("Idempotency-Key", "k2"))
	snap := again.snapshot(t)
	if again.Status != http.StatusAccepted || snap.ID != id || snap.Status != envelope.StatusRunning || snap.Seq != 1 {
		t.Fatalf("%d %+v", again.Status, snap)
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := newJobID()
		if err := envelope.ValidateID("id", id); err != nil || len(id) < 20 || seen[id] {
			t.Fatalf("id %q: %v (dup %v)", id, err, seen[id])
		}
		seen[id] = true
	}
	a, b := keyedJobID("alice", "k"), keyedJobID("alice", "k")
	if a != b || envelope.ValidateID("id", a) != nil {
		t.Fatalf("keyed ids %q %q", a, b)
	}
	if keyedJobID("alice", "k") == keyedJobID("bob", "k") || keyedJobID("a", "lice\x00k") == keyedJobID("alice", "k") {
		t.Fatal("keyed ids collide across users")
	}
}
