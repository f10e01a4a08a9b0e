package ingest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/pkg/envelope"
)

// batchAnswer decodes a 200 answer of POST /v1/jobs/batch.
func (r response) batchAnswer(t *testing.T) batchResponse {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("batch status %d: %s", r.Status, r.Body)
	}
	var b batchResponse
	if err := json.Unmarshal(r.Body, &b); err != nil {
		t.Fatalf("batch answer: %v in %s", err, r.Body)
	}
	return b
}

func (h *harness) batch(tok, body string) response {
	h.t.Helper()
	return h.do(http.MethodPost, "/v1/jobs/batch", []byte(body), bearer(tok))
}

// TestBatchAnswersEachItem: good items are stored and answered 202 in
// order, each bad item gets the error it would get alone, and nothing of a
// bad item is stored.
func TestBatchAnswersEachItem(t *testing.T) {
	h := newHarness(t, nil)
	tok := token(t, "alice")
	r := h.batch(tok, `{"jobs":[
		{"kind":"image","input":{"prompt":"one"}},
		{"kind":"audio"},
		{"kind":"a.b"},
		{"kind":"video","priority":"low","idempotency_key":"clip-7"},
		{"kind":"image","priority":"urgent"},
		{"kind":"image","input":[1]},
		{"kind":"image","extra":1},
		{"kind":"image","idempotency_key":""},
		"not an object"
	]}`)
	b := r.batchAnswer(t)
	want := []struct {
		status int
		code   string
	}{
		{202, ""}, {400, CodeUnknownKind}, {400, CodeInvalidKind}, {202, ""}, {400, CodeInvalidPriority},
		{400, CodeInvalidInput}, {400, CodeInvalidJSON}, {400, CodeInvalidIdempotencyKey}, {400, CodeInvalidJSON},
	}
	if len(b.Jobs) != len(want) || b.Accepted != 2 || b.Refused != len(want)-2 {
		t.Fatalf("answer %+v", b)
	}
	for i, w := range want {
		it := b.Jobs[i]
		if it.Status != w.status {
			t.Errorf("item %d: status %d, want %d (%+v)", i, it.Status, w.status, it.Error)
			continue
		}
		if w.code == "" {
			if it.Job == nil || it.Job.Status != envelope.StatusQueued || it.Job.User != "alice" {
				t.Errorf("item %d: job %+v", i, it.Job)
			}
			continue
		}
		if it.Job != nil || it.Error == nil || it.Error.Code != w.code || it.Error.Message == "" {
			t.Errorf("item %d: %+v %+v, want code %s", i, it.Job, it.Error, w.code)
		}
	}
	if n := h.jobsCount(); n != 2 {
		t.Fatalf("JOBS holds %d messages, want 2", n)
	}
	// The keyed item's id is the one a single submission with that key gets.
	keyed := b.Jobs[3].Job
	if keyed.ID != keyedJobID("alice", "clip-7") || keyed.Kind != "video" || keyed.Priority != envelope.PriorityLow {
		t.Fatalf("keyed job %+v", keyed)
	}
	for _, i := range []int{0, 3} {
		g := h.do(http.MethodGet, "/v1/jobs/"+b.Jobs[i].Job.ID, nil, bearer(tok))
		if g.Status != http.StatusOK || g.snapshot(t).ID != b.Jobs[i].Job.ID {
			t.Fatalf("GET item %d: %d %s", i, g.Status, g.Body)
		}
	}

	// The same keyed item again, in a batch or alone, is the same job: no
	// second message.
	again := h.batch(tok, `{"jobs":[{"kind":"video","priority":"low","idempotency_key":"clip-7"},{"kind":"video","idempotency_key":"clip-7"}]}`).batchAnswer(t)
	for i, it := range again.Jobs {
		if it.Status != http.StatusAccepted || it.Job == nil || it.Job.ID != keyed.ID {
			t.Fatalf("repeat item %d: %+v", i, it)
		}
	}
	single := h.submit(tok, `{"kind":"video","priority":"low"}`, withHeader("Idempotency-Key", "clip-7"))
	if single.Status != http.StatusAccepted || single.snapshot(t).ID != keyed.ID {
		t.Fatalf("single submission with the batch item's key: %d %s", single.Status, single.Body)
	}
	if n := h.jobsCount(); n != 2 {
		t.Fatalf("JOBS holds %d messages after the repeats, want 2", n)
	}

	// A single submission does not take the batch item's field.
	if r := h.submit(tok, `{"kind":"image","idempotency_key":"k"}`); r.Status != http.StatusBadRequest || r.errorCode(t) != CodeInvalidIdempotencyKey {
		t.Fatalf("single submission with idempotency_key: %d %s", r.Status, r.Body)
	}
}

// TestBatchRefusedAsAWhole: a batch that breaks a rule of the request (too
// many items, none, not the batch shape, no token) is refused with one JSON
// error and stores nothing.
func TestBatchRefusedAsAWhole(t *testing.T) {
	h := newHarness(t, nil)
	tok := token(t, "alice")
	items := make([]string, MaxBatch+1)
	for i := range items {
		items[i] = `{"kind":"image"}`
	}
	over := `{"jobs":[` + strings.Join(items, ",") + `]}`
	cases := []struct {
		name, body string
		tok        string
		status     int
		code       string
	}{
		{"1001 items", over, tok, http.StatusRequestEntityTooLarge, CodeBatchTooLarge},
		{"no items", `{"jobs":[]}`, tok, http.StatusBadRequest, CodeInvalidJSON},
		{"no jobs field", `{}`, tok, http.StatusBadRequest, CodeInvalidJSON},
		{"jobs not a list", `{"jobs":{"kind":"image"}}`, tok, http.StatusBadRequest, CodeInvalidJSON},
		{"unknown field", `{"jobs":[{"kind":"image"}],"x":1}`, tok, http.StatusBadRequest, CodeInvalidJSON},
		{"a list", `[{"kind":"image"}]`, tok, http.StatusBadRequest, CodeInvalidJSON},
		{"two values", `{"jobs":[{"kind":"image"}]} {}`, tok, http.StatusBadRequest, CodeInvalidJSON},
		{"no token", `{"jobs":[{"kind":"image"}]}`, "", http.StatusUnauthorized, CodeUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []reqOpt
			if c.tok != "" {
				opts = append(opts, bearer(c.tok))
			}
			r := h.do(http.MethodPost, "/v1/jobs/batch", []byte(c.body), opts...)
			if r.Status != c.status || r.errorCode(t) != c.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, c.status, c.code)
			}
		})
	}
	// Exactly MaxBatch is taken whole.
	exact := `{"jobs":[` + strings.Join(items[:MaxBatch], ",") + `]}`
	if b := h.batch(tok, exact).batchAnswer(t); b.Accepted != MaxBatch {
		t.Fatalf("a batch of %d: %d accepted, %d refused", MaxBatch, b.Accepted, b.Refused)
	}
	if n := h.jobsCount(); n != MaxBatch {
		t.Fatalf("JOBS holds %d messages, want %d (and none of the refused batches)", n, MaxBatch)
	}
}

// TestBatchAnswerBytes: the answer written from its items' JSON (encoded
// while the PubAcks are on their way) is byte for byte what encoding the
// whole batchResponse would write.
func TestBatchAnswerBytes(t *testing.T) {
	due := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	job := envelope.Job{ID: "j1", User: "alice", Kind: "image", Priority: envelope.PriorityNormal, CreatedAt: due.Add(-time.Hour)}
	items := []batchItem{
		acceptedItem(acceptedSnapshot(job, time.Time{})),
		refusedItem(newError(http.StatusBadRequest, CodeUnknownKind, `kind "x" <is> not served`)),
		acceptedItem(acceptedSnapshot(job, due)),
	}
	encoded := make([][]byte, len(items))
	for i, it := range items {
		encoded[i] = encodeItem(it)
	}
	rec := httptest.NewRecorder()
	writeBatch(rec, 2, 1, encoded)
	want := httptest.NewRecorder()
	httpx.WriteJSON(want, http.StatusOK, batchResponse{Accepted: 2, Refused: 1, Jobs: items})
	if rec.Body.String() != want.Body.String() || rec.Code != want.Code ||
		rec.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
		t.Fatalf("answer\n%d %s\nwant\n%d %s", rec.Code, rec.Body, want.Code, want.Body)
	}
}
