package ingest

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

func TestCancel(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	id := h.submit(alice, `{"kind":"image"}`).snapshot(t).ID

	notices, err := h.nc.SubscribeSync("cancel.>")
	if err != nil {
		t.Fatal(err)
	}
	defer notices.Unsubscribe()
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	r := h.do(http.MethodDelete, "/v1/jobs/"+id, nil, bearer(alice))
	if r.Status != http.StatusOK {
		t.Fatalf("DELETE %d: %s", r.Status, r.Body)
	}
	snap := r.snapshot(t)
	if snap.Status != envelope.StatusCancelled || snap.Seq != 1 {
		t.Fatalf("snapshot %+v", snap)
	}

	// The processor's notice: core NATS, empty body.
	m, err := notices.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "cancel.alice."+id || len(m.Data) != 0 {
		t.Fatalf("notice on %q with %d bytes", m.Subject, len(m.Data))
	}

	// The KV holds it and the cancelled event is in EVENTS.
	stored, _, err := h.store.Get(context.Background(), id)
	if err != nil || stored.Status != envelope.StatusCancelled {
		t.Fatalf("stored %+v, %v", stored, err)
	}
	ev, err := h.js.Stream(context.Background(), streams.Events)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ev.GetLastMsgForSubject(context.Background(), envelope.EventSubject("alice", id))
	if err != nil {
		t.Fatal(err)
	}
	e, es, err := envelope.DecodeEvent(raw.Data)
	if err != nil || e.Type != envelope.TypeCancelled || es.Seq != 1 {
		t.Fatalf("event %+v %+v %v", e, es, err)
	}

	// Cancelling again: 409, nothing changes, no second notice.
	again := h.do(http.MethodDelete, "/v1/jobs/"+id, nil, bearer(alice))
	if again.Status != http.StatusConflict || again.errorCode(t) != CodeAlreadyTerminal {
		t.Fatalf("second DELETE %d: %s", again.Status, again.Body)
	}
	if !strings.Contains(string(again.Body), "cancelled") {
		t.Errorf("409 does not name the status: %s", again.Body)
	}
	if _, err := notices.NextMsg(100 * time.Millisecond); err != nats.ErrTimeout {
		t.Errorf("a second cancel notice: %v", err)
	}
}

func TestCancelTerminalJob(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	id := h.submit(alice, `{"kind":"video"}`).snapshot(t).ID
	// The processor finished it.
	snap, rev, err := h.store.Lookup(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []envelope.Status{envelope.StatusRunning, envelope.StatusSucceeded} {
		if snap, rev, err = h.store.ApplyAt(context.Background(), snap, rev, envelope.EventType(st), func(s *envelope.Snapshot) error {
			s.Status = st
			if st == envelope.StatusSucceeded {
				s.Progress, s.Result = 100, []byte(`{"url":"https://example.com/x.png"}`)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	r := h.do(http.MethodDelete, "/v1/jobs/"+id, nil, bearer(alice))
	if r.Status != http.StatusConflict || r.errorCode(t) != CodeAlreadyTerminal {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if !strings.Contains(string(r.Body), "succeeded") {
		t.Errorf("409 does not name the status: %s", r.Body)
	}
	g := h.do(http.MethodGet, "/v1/jobs/"+id, nil, bearer(alice))
	if s := g.snapshot(t); s.Status != envelope.StatusSucceeded || s.Seq != 2 || string(s.Result) == "" {
		t.Fatalf("GET after 409: %+v", s)
	}
}

func TestAdminCancelsAnyJob(t *testing.T) {
	h := newHarness(t, nil)
	id := h.submit(token(t, "bob"), `{"kind":"image"}`).snapshot(t).ID
	notices, err := h.nc.SubscribeSync("cancel.bob." + id)
	if err != nil {
		t.Fatal(err)
	}
	defer notices.Unsubscribe()
	h.nc.Flush()
	r := h.do(http.MethodDelete, "/v1/jobs/"+id, nil, bearer(adminToken(t, "root")))
	if r.Status != http.StatusOK || r.snapshot(t).Status != envelope.StatusCancelled {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if _, err := notices.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("notice on cancel.bob.<job>: %v", err)
	}
}

// The metrics, health and readiness routes share the API's mux.
func TestOpsRoutes(t *testing.T) {
	h := newHarness(t, nil)
	h.submit(token(t, "alice"), `{"kind":"image"}`)
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := h.do(http.MethodGet, p, nil); r.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", p, r.Status, r.Body)
		}
	}
	r := h.do(http.MethodGet, "/metrics", nil)
	for _, name := range []string{
		"beamline_ingest_requests_total", "beamline_ingest_request_duration_seconds",
		"beamline_ingest_jobs_submitted_total", "beamline_ingest_inflight",
	} {
		if !strings.Contains(string(r.Body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// Whoever writes seq N+1 makes sure seq N's event exists. A processor
// stored running (seq 1) but EVENTS refused its event: a DELETE must not
// store cancelled (seq 2) over it — nobody could publish seq 1 afterwards —
// so it is refused (503) while EVENTS refuses; once EVENTS is back it
// publishes seq 1 first, and the job's events are 1, 2 in order.
func TestCancelOverAnUnannouncedChange(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	id := h.submit(alice, `{"kind":"image"}`).snapshot(t).ID
	ctx := context.Background()
	st, err := h.js.Stream(ctx, streams.Events)
	if err != nil {
		t.Fatal(err)
	}
	orig := st.CachedInfo().Config
	broken := orig
	broken.MaxMsgSize = 1
	if _, err := h.js.UpdateStream(ctx, broken); err != nil {
		t.Fatal(err)
	}
	snap, rev, err := h.store.Lookup(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.store.ApplyAt(ctx, snap, rev, envelope.TypeStarted, func(s *envelope.Snapshot) error {
		s.Status, s.Attempt = envelope.StatusRunning, 1
		return nil
	}); err == nil {
		t.Fatal("started published with EVENTS refusing publishes")
	}

	r := h.do(http.MethodDelete, "/v1/jobs/"+id, nil, bearer(alice))
	if r.Status != http.StatusServiceUnavailable || r.errorCode(t) != CodeUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("DELETE over an unannounced seq 1: %d %s", r.Status, r.Body)
	}
	if s, _, err := h.store.Get(ctx, id); err != nil || s.Seq != 1 || s.Status != envelope.StatusRunning {
		t.Fatalf("stored after the refused DELETE: %+v, %v", s, err)
	}

	if _, err := h.js.UpdateStream(ctx, orig); err != nil {
		t.Fatal(err)
	}
	r = h.do(http.MethodDelete, "/v1/jobs/"+id, nil, bearer(alice))
	if r.Status != http.StatusOK || r.snapshot(t).Seq != 2 {
		t.Fatalf("DELETE once EVENTS is back: %d %s", r.Status, r.Body)
	}
	var seqs []uint64
	for seq := uint64(1); ; seq++ {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(envelope.EventSubject("alice", id)))
		if err != nil {
			break
		}
		_, es, err := envelope.DecodeEvent(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, es.Seq)
		seq = m.Sequence
	}
	if len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 2 {
		t.Fatalf("event seqs %v, want 1 2", seqs)
	}
}
