package ingest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// TestExpiredBeforeStart: a job not started within expires_in_ms ends
// expired (terminal, never run, its event in EVENTS) once a processor
// takes it; one taken in time runs.
func TestExpiredBeforeStart(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	stale := h.submit(alice, `{"kind":"image","expires_in_ms":1}`).snapshot(t)
	fresh := h.submit(alice, `{"kind":"image","expires_in_ms":600000,"input":{"sim":{"duration_ms":10}}}`).snapshot(t)
	time.Sleep(20 * time.Millisecond) // stale's time has passed; no processor yet
	h.startProcessor()
	testutil.WaitFor(t, 15*time.Second, func() bool {
		return h.getSnap(alice, stale.ID).Status.Terminal() && h.getSnap(alice, fresh.ID).Status.Terminal()
	}, "jobs did not end")
	if g := h.getSnap(alice, stale.ID); g.Status != envelope.StatusExpired || g.Attempt != 0 || g.Error == "" {
		t.Fatalf("stale job: %+v, want expired, never run", g)
	}
	if g := h.getSnap(alice, fresh.ID); g.Status != envelope.StatusSucceeded {
		t.Fatalf("fresh job: %+v, want succeeded", g)
	}
	st, err := h.js.Stream(context.Background(), streams.Events)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(context.Background(), envelope.EventSubject("alice", stale.ID))
	if err != nil {
		t.Fatal(err)
	}
	if typ := m.Header.Get(envelope.HeaderType); typ != string(envelope.TypeExpired) {
		t.Fatalf("last event of the expired job is %q", typ)
	}
	// The terminal state is final: cancel answers 409.
	if r := h.do(http.MethodDelete, "/v1/jobs/"+stale.ID, nil, bearer(alice)); r.Status != http.StatusConflict {
		t.Fatalf("cancel of an expired job: %d %s", r.Status, r.Body)
	}
	for _, body := range []string{`{"kind":"image","expires_in_ms":0}`, `{"kind":"image","expires_in_ms":-5}`} {
		if r := h.submit(alice, body); r.Status != http.StatusBadRequest || r.errorCode(t) != CodeInvalidSchedule {
			t.Errorf("%s: %d %s", body, r.Status, r.Body)
		}
	}
}
