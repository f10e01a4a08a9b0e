package ingest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

func (h *harness) dlqList(tok, query string) (response, dlqList) {
	h.t.Helper()
	r := h.do(http.MethodGet, "/v1/admin/dlq"+query, nil, bearer(tok))
	var l dlqList
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &l); err != nil {
			h.t.Fatalf("dlq answer: %v in %s", err, r.Body)
		}
	}
	return r, l
}

func (h *harness) redrive(tok, body string) (response, redriveResult) {
	h.t.Helper()
	r := h.do(http.MethodPost, "/v1/admin/dlq/redrive", []byte(body), bearer(tok))
	var res redriveResult
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &res); err != nil {
			h.t.Fatalf("redrive answer: %v in %s", err, r.Body)
		}
	}
	return r, res
}

// TestDLQListAndRedrive: an admin lists dead jobs with reason, attempts
// and last error, filtered; a redrive reruns the matching ones (the same
// rerun a user's rerun makes), removes them from the DLQ once stored, and
// reports how many; a filter matching nothing is 0, not an error.
func TestDLQListAndRedrive(t *testing.T) {
	h := newHarness(t, nil)
	h.startProcessor()
	alice, bob, ops := token(t, "alice"), token(t, "bob"), adminToken(t, "ops")
	dies := `"input":{"sim":{"fail_times":50}}`
	a1 := h.submit(alice, `{"kind":"image",`+dies+`}`).snapshot(t)
	a2 := h.submit(alice, `{"kind":"image","priority":"low",`+dies+`}`).snapshot(t)
	b1 := h.submit(bob, `{"kind":"video",`+dies+`}`).snapshot(t)
	for _, j := range []envelope.Snapshot{a1, a2} {
		h.waitStatus(alice, j.ID, envelope.StatusDead)
	}
	h.waitStatus(bob, b1.ID, envelope.StatusDead)

	if r, _ := h.dlqList(alice, ""); r.Status != http.StatusForbidden || r.errorCode(t) != CodeForbidden {
		t.Fatalf("a user reads the DLQ: %d %s", r.Status, r.Body)
	}
	// The DLQ copy is stored after the dead state, before the message's
	// ack (docs/design.md#final-events-are-confirmed-before-the-ack): a job
	// reads dead a moment before its copy is listed.
	var all dlqList
	testutil.WaitFor(t, 10*time.Second, func() bool {
		_, all = h.dlqList(ops, "")
		return len(all.Jobs) >= 3
	}, func() string { return fmt.Sprintf("the DLQ lists %d jobs, want 3: %+v", len(all.Jobs), all) })
	if len(all.Jobs) != 3 {
		t.Fatalf("DLQ lists %d jobs, want 3: %+v", len(all.Jobs), all)
	}
	for _, d := range all.Jobs {
		if d.Reason == "" || d.Attempts != 2 || d.Error == "" || d.DiedAt.IsZero() {
			t.Errorf("dead job %+v", d)
		}
	}
	for q, want := range map[string]int{"?kind=video": 1, "?user=alice": 2, "?reason=SIM": 3, "?reason=nothing-like-it": 0, "?user=alice&limit=1": 1} {
		if _, l := h.dlqList(ops, q); len(l.Jobs) != want {
			t.Errorf("%s: %d jobs, want %d", q, len(l.Jobs), want)
		}
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?since=yesterday", "?kind=A", "?colour=red"} {
		if r, _ := h.dlqList(ops, q); r.Status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", q, r.Status, r.Body)
		}
	}

	// Nothing matches: 0.
	if r, res := h.redrive(ops, `{"user":"nobody"}`); r.Status != http.StatusOK || res.Matched != 0 || res.Redriven != 0 {
		t.Fatalf("redrive of nothing: %d %s", r.Status, r.Body)
	}
	if r, _ := h.redrive(ops, `{"user":"alice","colour":"red"}`); r.Status != http.StatusBadRequest || r.errorCode(t) != CodeInvalidJSON {
		t.Fatalf("bad filter: %d %s", r.Status, r.Body)
	}
	if r, _ := h.redrive(alice, `{}`); r.Status != http.StatusForbidden {
		t.Fatalf("a user redrives: %d %s", r.Status, r.Body)
	}
	// alice reruns a1 herself first: the redrive makes no second rerun.
	own := h.do(http.MethodPost, "/v1/jobs/"+a1.ID+"/rerun", nil, bearer(alice)).snapshot(t)
	r, res := h.redrive(ops, `{"user":"alice"}`)
	if r.Status != http.StatusOK || res.Matched != 2 || res.Redriven != 2 || len(res.Reruns) != 2 {
		t.Fatalf("redrive: %d %s", r.Status, r.Body)
	}
	got := map[string]envelope.Snapshot{}
	for _, re := range res.Reruns {
		got[re.RerunOf] = re
	}
	if got[a1.ID].ID != own.ID || got[a2.ID].ID == "" || got[a2.ID].Priority != envelope.PriorityLow || got[a2.ID].User != "alice" {
		t.Fatalf("reruns %+v (alice's own rerun %s)", res.Reruns, own.ID)
	}
	// The redriven entries left the DLQ; bob's stayed. (The reruns die
	// again, with their own entries.)
	_, after := h.dlqList(ops, "")
	for _, d := range after.Jobs {
		if d.ID == a1.ID || d.ID == a2.ID {
			t.Fatalf("redriven job %s still in the DLQ", d.ID)
		}
	}
	if _, l := h.dlqList(ops, "?user=bob"); len(l.Jobs) != 1 || l.Jobs[0].ID != b1.ID {
		t.Fatalf("bob's dead job: %+v", l)
	}
}

// TestAdminStreams: an admin reads each stream's messages, bytes and the
// retention in force; a user may not.
func TestAdminStreams(t *testing.T) {
	h := newHarness(t, nil)
	h.submit(token(t, "alice"), `{"kind":"image"}`)
	if r := h.do(http.MethodGet, "/v1/admin/streams", nil, bearer(token(t, "alice"))); r.Status != http.StatusForbidden {
		t.Fatalf("a user: %d %s", r.Status, r.Body)
	}
	r := h.do(http.MethodGet, "/v1/admin/streams", nil, bearer(adminToken(t, "ops")))
	var out struct {
		Streams []streamFigure `json:"streams"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &out) != nil || len(out.Streams) != 6 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	got := map[string]streamFigure{}
	for _, f := range out.Streams {
		got[f.Name] = f
	}
	if got["JOBS"].Messages != 1 || got["JOBS"].Bytes == 0 || got["JOBINDEX"].Messages != 1 || got["EVENTS"].MaxAgeText != "24h0m0s" || got["DLQ"].MaxAge == 0 {
		t.Fatalf("figures %+v", got)
	}
}
