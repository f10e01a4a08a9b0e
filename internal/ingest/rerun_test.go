package ingest

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

func (h *harness) waitStatus(tok, id string, want envelope.Status) envelope.Snapshot {
	h.t.Helper()
	var g envelope.Snapshot
	testutil.WaitFor(h.t, 15*time.Second, func() bool {
		g = h.getSnap(tok, id)
		return g.Status == want
	}, "job ", id, " never became ", want)
	return g
}

// TestRerun: a failed job reruns as a new job of the same kind, priority
// and input with rerun_of; a double click makes one rerun; a running job
// is refused (409) until it ended; another user's job is 403, an unknown
// one 404.
func TestRerun(t *testing.T) {
	h := newHarness(t, nil)
	h.startProcessor()
	alice, bob := token(t, "alice"), token(t, "bob")
	failed := h.submit(alice, `{"kind":"video","priority":"high","input":{"sim":{"fail":"terminal"}}}`).snapshot(t)
	h.waitStatus(alice, failed.ID, envelope.StatusFailed)

	first := h.do(http.MethodPost, "/v1/jobs/"+failed.ID+"/rerun", nil, bearer(alice))
	if first.Status != http.StatusAccepted {
		t.Fatalf("rerun: %d %s", first.Status, first.Body)
	}
	re := first.snapshot(t)
	if re.ID == failed.ID || re.RerunOf != failed.ID || re.Kind != "video" || re.Priority != envelope.PriorityHigh || re.User != "alice" {
		t.Fatalf("rerun %+v", re)
	}
	again := h.do(http.MethodPost, "/v1/jobs/"+failed.ID+"/rerun", nil, bearer(alice))
	if again.Status != http.StatusAccepted || again.snapshot(t).ID != re.ID {
		t.Fatalf("second click: %d %s", again.Status, again.Body)
	}
	// The same input: it fails the same way, and it says what it reran.
	end := h.waitStatus(alice, re.ID, envelope.StatusFailed)
	if end.RerunOf != failed.ID || end.Attempt != 1 {
		t.Fatalf("rerun ended %+v", end)
	}
	if ids := h.listAll(alice, url.Values{}); len(ids) != 2 {
		t.Fatalf("alice has %d jobs, want the job and one rerun", len(ids))
	}
	// The old job stays failed.
	if g := h.getSnap(alice, failed.ID); g.Status != envelope.StatusFailed {
		t.Fatalf("old job now %+v", g)
	}

	long := h.submit(alice, `{"kind":"image","input":{"sim":{"duration_ms":60000}}}`).snapshot(t)
	h.waitStatus(alice, long.ID, envelope.StatusRunning)
	if r := h.do(http.MethodPost, "/v1/jobs/"+long.ID+"/rerun", nil, bearer(alice)); r.Status != http.StatusConflict || r.errorCode(t) != CodeNotRerunnable {
		t.Fatalf("rerun of a running job: %d %s", r.Status, r.Body)
	}
	if r := h.do(http.MethodPost, "/v1/jobs/"+failed.ID+"/rerun", nil, bearer(bob)); r.Status != http.StatusForbidden || r.errorCode(t) != CodeForbidden {
		t.Fatalf("bob reruns alice's job: %d %s", r.Status, r.Body)
	}
	if r := h.do(http.MethodPost, "/v1/jobs/nosuchjob/rerun", nil, bearer(alice)); r.Status != http.StatusNotFound || r.errorCode(t) != CodeNotFound {
		t.Fatalf("rerun of an unknown job: %d %s", r.Status, r.Body)
	}
	// Cancelled, it can be rerun (by an admin too: the rerun is alice's).
	if r := h.do(http.MethodDelete, "/v1/jobs/"+long.ID, nil, bearer(alice)); r.Status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}
	r := h.do(http.MethodPost, "/v1/jobs/"+long.ID+"/rerun", nil, bearer(adminToken(t, "ops")))
	if r.Status != http.StatusAccepted || r.snapshot(t).User != "alice" || r.snapshot(t).RerunOf != long.ID {
		t.Fatalf("admin rerun of a cancelled job: %d %s", r.Status, r.Body)
	}
}
