package replicatefake_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider/replicatefake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T) (*replicatefake.Server, *httptest.Server) {
	t.Helper()
	f := replicatefake.New(replicatefake.Config{})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Cleanup(f.Close)
	t.Cleanup(srv.Client().CloseIdleConnections)
	return f, srv
}

func do(t *testing.T, srv *httptest.Server, method, path, body string, hdr ...string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+replicatefake.DefaultToken)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, resp.Header, m
}

// TestLifecycle: a create answers 201 starting with urls; polls see
// processing then succeeded with metrics.predict_time; the output file is
// served once.
func TestLifecycle(t *testing.T) {
	f, srv := start(t)
	code, _, p := do(t, srv, http.MethodPost, "/v1/models/acme/painter/predictions", `{"input":{"starting_ms":30,"duration_ms":30,"steps":2}}`)
	if code != http.StatusCreated || p["status"] != "starting" || p["model"] != "acme/painter" {
		t.Fatalf("create = %d %v", code, p)
	}
	id := p["id"].(string)
	urls := p["urls"].(map[string]any)
	if urls["get"] != srv.URL+"/v1/predictions/"+id || urls["cancel"] != srv.URL+"/v1/predictions/"+id+"/cancel" {
		t.Fatalf("urls = %v", urls)
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for !seen["succeeded"] && time.Now().Before(deadline) {
		_, _, g := do(t, srv, http.MethodGet, "/v1/predictions/"+id, "")
		seen[g["status"].(string)] = true
		p = g
		time.Sleep(2 * time.Millisecond)
	}
	if !seen["processing"] || !seen["succeeded"] {
		t.Fatalf("statuses seen %v, want processing and succeeded", seen)
	}
	if m, _ := p["metrics"].(map[string]any); m["predict_time"] == nil || p["completed_at"] == nil || !strings.Contains(p["logs"].(string), "100%") {
		t.Fatalf("final prediction %v: want predict_time, completed_at and logs", p)
	}
	fileURL := p["output"].(string)
	path := strings.TrimPrefix(fileURL, srv.URL)
	for i, want := range []int{http.StatusOK, http.StatusNotFound} {
		resp, err := http.Get(fileURL)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("download %d = %d, want %d", i+1, resp.StatusCode, want)
		}
	}
	if f.Downloads(path) != 1 || f.CreatedTotal() != 1 {
		t.Fatalf("downloads %d, created %d", f.Downloads(path), f.CreatedTotal())
	}
}

func TestAuthRoutesAndErrors(t *testing.T) {
	f, srv := start(t)
	if code, _, p := do(t, srv, http.MethodPost, "/v1/predictions", `{"version":"v","input":{}}`, "Authorization", "Bearer nope"); code != http.StatusUnauthorized || p["detail"] == nil {
		t.Fatalf("bad token = %d %v", code, p)
	}
	if code, _, p := do(t, srv, http.MethodPost, "/v1/predictions", `{"input":{}}`); code != http.StatusUnprocessableEntity || p["title"] != "Input validation failed" {
		t.Fatalf("no version = %d %v", code, p)
	}
	if code, _, p := do(t, srv, http.MethodPost, "/v1/predictions", `{"version":"v","input":{"steps":-1}}`); code != http.StatusUnprocessableEntity || !strings.Contains(p["detail"].(string), "input.steps") {
		t.Fatalf("bad input = %d %v", code, p)
	}
	if code, _, _ := do(t, srv, http.MethodGet, "/v1/predictions/nope", ""); code != http.StatusNotFound {
		t.Fatalf("unknown prediction = %d", code)
	}
	f.Inject(replicatefake.Fault{Route: replicatefake.RouteCreate, Status: http.StatusTooManyRequests, RetryAfter: "7"})
	if code, h, p := do(t, srv, http.MethodPost, "/v1/predictions", `{"version":"v","input":{}}`); code != http.StatusTooManyRequests || h.Get("Retry-After") != "7" || p["detail"] == nil {
		t.Fatalf("throttled = %d %v %v", code, h, p)
	}
	if f.CreatedTotal() != 0 {
		t.Fatalf("created %d, want 0", f.CreatedTotal())
	}
}

// TestPreferWaitAndCancel: Prefer: wait=n holds the create until the
// prediction ends; cancel ends a running prediction and answers it.
func TestPreferWaitAndCancel(t *testing.T) {
	f, srv := start(t)
	if code, _, p := do(t, srv, http.MethodPost, "/v1/predictions", `{"version":"acme/x:abc","input":{"output":"hi"}}`, "Prefer", "wait=5"); code != http.StatusCreated || p["status"] != "succeeded" || p["output"] != "hi" || p["model"] != "acme/x" {
		t.Fatalf("sync create = %d %v", code, p)
	}
	_, _, p := do(t, srv, http.MethodPost, "/v1/predictions", `{"version":"v","input":{"duration_ms":600000},"webhook":"https://example.com/h","webhook_events_filter":["completed"]}`)
	id := p["id"].(string)
	if p["webhook"] != "https://example.com/h" {
		t.Fatalf("webhook not echoed: %v", p)
	}
	if code, _, c := do(t, srv, http.MethodPost, "/v1/predictions/"+id+"/cancel", ""); code != http.StatusOK || c["status"] != "canceled" {
		t.Fatalf("cancel = %d %v", code, c)
	}
	if code, _, c := do(t, srv, http.MethodPost, "/v1/predictions/"+id+"/cancel", ""); code != http.StatusOK || c["status"] != "canceled" || f.Cancels(id) != 1 {
		t.Fatalf("second cancel = %d %v, cancels %d", code, c, f.Cancels(id))
	}
}
