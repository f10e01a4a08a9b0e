package perms

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
)

// TestIngestListsAndBatchesWithItsOwnUser: a batch (async publishes of
// jobs and their JOBINDEX entries) and GET /v1/jobs (batched direct gets of
// JOBINDEX and of job_status) work with ingest's own NATS user.
func TestIngestListsAndBatchesWithItsOwnUser(t *testing.T) {
	p := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: 10 * time.Second}
	call := func(method, path, body string) []byte {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = bytes.NewReader([]byte(body))
		}
		req, err := http.NewRequestWithContext(ctx, method, p.ingestURL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+p.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s (ingest violations %v)", method, path, resp.StatusCode, b, p.ingest.rec.violations())
		}
		return b
	}
	var batch struct {
		Accepted int `json:"accepted"`
	}
	if err := json.Unmarshal(call(http.MethodPost, "/v1/jobs/batch", `{"jobs":[{"kind":"image","input":{"sim":{"duration_ms":10}}},{"kind":"image","idempotency_key":"k1"}]}`), &batch); err != nil || batch.Accepted != 2 {
		t.Fatalf("batch: %v %+v", err, batch)
	}
	var list struct {
		Jobs []json.RawMessage `json:"jobs"`
	}
	if err := json.Unmarshal(call(http.MethodGet, "/v1/jobs?limit=10", ""), &list); err != nil || len(list.Jobs) != 2 {
		t.Fatalf("list: %v %d jobs", err, len(list.Jobs))
	}
	p.noViolations(t)
}

// TestIngestSchedulesWithItsOwnUser: a job with delay_ms is stored in
// SCHEDULED, read back as scheduled, cancelled (its schedule purged), and
// another one fires into JOBS and runs, all with least privilege.
func TestIngestSchedulesWithItsOwnUser(t *testing.T) {
	p := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: 10 * time.Second}
	call := func(method, path, body string, want int) map[string]any {
		t.Helper()
		var v map[string]any
		_ = json.Unmarshal(ingestCall(t, ctx, hc, p, method, path, body, want), &v)
		return v
	}
	later := call(http.MethodPost, "/v1/jobs", `{"kind":"image","delay_ms":60000}`, http.StatusAccepted)["id"].(string)
	if st := call(http.MethodGet, "/v1/jobs/"+later, "", http.StatusOK)["status"]; st != "scheduled" {
		t.Fatalf("status %v", st)
	}
	if st := call(http.MethodDelete, "/v1/jobs/"+later, "", http.StatusOK)["status"]; st != "cancelled" {
		t.Fatalf("cancel: status %v", st)
	}
	soon := call(http.MethodPost, "/v1/jobs", `{"kind":"image","delay_ms":300,"input":{"sim":{"duration_ms":10}}}`, http.StatusAccepted)["id"].(string)
	for call(http.MethodGet, "/v1/jobs/"+soon, "", http.StatusOK)["status"] != "succeeded" {
		if ctx.Err() != nil {
			t.Fatal("the scheduled job did not run")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	p.noViolations(t)
}

// TestIngestRedrivesWithItsOwnUser: GET /v1/admin/dlq and a redrive read
// and delete DLQ entries with ingest's own user.
func TestIngestRedrivesWithItsOwnUser(t *testing.T) {
	p := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: 10 * time.Second}
	admin, err := auth.Issue(secret, "ops", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	call := func(tok, method, path, body string) map[string]any {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = bytes.NewReader([]byte(body))
		}
		req, err := http.NewRequestWithContext(ctx, method, p.ingestURL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %s (ingest violations %v)", method, path, resp.StatusCode, b, p.ingest.rec.violations())
		}
		var v map[string]any
		_ = json.Unmarshal(b, &v)
		return v
	}
	id := call(p.token, http.MethodPost, "/v1/jobs", `{"kind":"image","input":{"sim":{"fail_times":50}}}`)["id"].(string)
	for call(p.token, http.MethodGet, "/v1/jobs/"+id, "")["status"] != "dead" {
		if ctx.Err() != nil {
			t.Fatal("the job did not die")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if jobs := call(admin, http.MethodGet, "/v1/admin/dlq", "")["jobs"].([]any); len(jobs) != 1 {
		t.Fatalf("DLQ lists %d jobs", len(jobs))
	}
	if n := call(admin, http.MethodPost, "/v1/admin/dlq/redrive", `{"user":"alice"}`)["redriven"]; n != float64(1) {
		t.Fatalf("redriven %v", n)
	}
	if st := call(admin, http.MethodGet, "/v1/admin/streams", "")["streams"].([]any); len(st) != 6 {
		t.Fatalf("%d streams", len(st))
	}
	p.noViolations(t)
}

// TestIngestRunsSchedulesWithItsOwnUser: a repeating schedule is stored,
// listed, fires into jobs through ingest's consumer, and is deleted, with
// ingest's own user.
func TestIngestRunsSchedulesWithItsOwnUser(t *testing.T) {
	p := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: 10 * time.Second}
	call := func(method, path, body string, want int) []byte {
		t.Helper()
		return ingestCall(t, ctx, hc, p, method, path, body, want)
	}
	call(http.MethodPost, "/v1/schedules", `{"name":"tick","every":"1s","job":{"kind":"image","input":{"sim":{"duration_ms":10}}}}`, http.StatusCreated)
	for {
		var l struct {
			Jobs []json.RawMessage `json:"jobs"`
		}
		if err := json.Unmarshal(call(http.MethodGet, "/v1/jobs", "", http.StatusOK), &l); err == nil && len(l.Jobs) >= 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the schedule made no job (ingest violations %v)", p.ingest.rec.violations())
		}
		time.Sleep(100 * time.Millisecond)
	}
	call(http.MethodGet, "/v1/schedules", "", http.StatusOK)
	call(http.MethodDelete, "/v1/schedules/tick", "", http.StatusNoContent)
	p.noViolations(t)
}

// ingestCall sends one API request to p's ingest with p's token and
// returns the body, failing the test (with ingest's permission violations)
// unless the status is want.
func ingestCall(t *testing.T, ctx context.Context, hc *http.Client, p *pipeline, method, path, body string, want int) []byte {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, p.ingestURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s (ingest violations %v)", method, path, resp.StatusCode, b, p.ingest.rec.violations())
	}
	return b
}
