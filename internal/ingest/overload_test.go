package ingest

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/streams"
)

// JOBS is a discard-new stream: when it is full, the publish is refused
// and the client gets 429 with Retry-After, never a silent drop.
func TestJobsFull(t *testing.T) {
	h := newHarness(t, nil)
	s, err := h.js.Stream(context.Background(), streams.Jobs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgs = 2
	if _, err := h.js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	alice := token(t, "alice")
	for i := range 2 {
		if r := h.submit(alice, `{"kind":"image"}`); r.Status != http.StatusAccepted {
			t.Fatalf("job %d: %d %s", i, r.Status, r.Body)
		}
	}
	kv := h.kvCount()
	r := h.submit(alice, `{"kind":"image"}`, withHeader("Idempotency-Key", "third"))
	if r.Status != http.StatusTooManyRequests || r.errorCode(t) != CodeQueueFull {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	if n := h.jobsCount(); n != 2 {
		t.Fatalf("JOBS holds %d", n)
	}
	if n := h.kvCount(); n != kv {
		t.Fatalf("a refused job left a snapshot")
	}
	if got := h.metric("beamline_ingest_rejected_total", map[string]string{"reason": CodeQueueFull}); got != 1 {
		t.Errorf("rejected_total{queue_full} = %v", got)
	}
}

// With every in-flight slot taken (here by a client that is slowly sending
// its body), the next submission gets 429 with Retry-After at once.
func TestInFlightLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxInFlight = 1 })
	alice := token(t, "alice")

	pr, pw := io.Pipe()
	slow := mustRequest(t, http.MethodPost, h.url+"/v1/jobs", pr)
	slow.Header.Set("Content-Type", "application/json")
	slow.Header.Set("Authorization", "Bearer "+alice)
	done := make(chan int, 1)
	go func() {
		resp, err := h.client.Do(slow)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	if _, err := pw.Write([]byte(`{"kind":"image",`)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return h.metric("beamline_ingest_inflight", nil) == 1 })

	r := h.submit(alice, `{"kind":"image"}`)
	if r.Status != http.StatusTooManyRequests || r.errorCode(t) != CodeOverloaded {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}

	// The slow client finishes; its job is accepted and the slot is free.
	if _, err := pw.Write([]byte(`"priority":"low"}`)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case code := <-done:
		if code != http.StatusAccepted {
			t.Fatalf("slow submission: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("slow submission did not finish")
	}
	if r := h.submit(alice, `{"kind":"image"}`); r.Status != http.StatusAccepted {
		t.Fatalf("after the slot freed: %d %s", r.Status, r.Body)
	}
	if n := h.jobsCount(); n != 2 {
		t.Fatalf("JOBS holds %d, want 2", n)
	}
}

// With NATS gone, nothing can be stored: 503 with Retry-After.
func TestNATSDown(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	id := h.submit(alice, `{"kind":"image"}`).snapshot(t).ID

	h.srv.Shutdown()
	h.srv.WaitForShutdown()
	testutil.WaitFor(t, 5*time.Second, func() bool { return !h.nc.IsConnected() })

	for _, r := range []response{
		h.submit(alice, `{"kind":"image"}`),
		h.submit(alice, `{"kind":"image"}`, withHeader("Idempotency-Key", "k")),
		h.do(http.MethodGet, "/v1/jobs/"+id, nil, bearer(alice)),
		h.do(http.MethodDelete, "/v1/jobs/"+id, nil, bearer(alice)),
	} {
		if r.Status != http.StatusServiceUnavailable || r.errorCode(t) != CodeUnavailable {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if r.Header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
	}
	if r := h.do(http.MethodGet, "/readyz", nil); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d", r.Status)
	}
}

// The publish itself fails (no stream answers the subject): 503, not 500.
func TestNoStream(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.js.DeleteStream(context.Background(), streams.Jobs); err != nil {
		t.Fatal(err)
	}
	r := h.submit(token(t, "alice"), `{"kind":"image"}`)
	if r.Status != http.StatusServiceUnavailable || r.errorCode(t) != CodeUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %v %s", r.Status, r.Header, r.Body)
	}
}
