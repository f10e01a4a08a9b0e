package replicatefake_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
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

type hook struct {
	id, ts, sig string
	body        map[string]any
}

// verify checks a delivery the way a receiver must, written here from the
// Standard Webhooks description rather than with Sign.
func verify(secret string, h hook, raw []byte) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(h.id + "." + h.ts + "."))
	mac.Write(raw)
	want := mac.Sum(nil)
	for _, entry := range strings.Fields(h.sig) {
		v, b64, ok := strings.Cut(entry, ",")
		got, err := base64.StdEncoding.DecodeString(b64)
		if ok && v == "v1" && err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

func hookReceiver(t *testing.T) (*httptest.Server, func() []hook, func() int) {
	t.Helper()
	var mu sync.Mutex
	var got []hook
	bad := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		h := hook{id: r.Header.Get("webhook-id"), ts: r.Header.Get("webhook-timestamp"), sig: r.Header.Get("webhook-signature")}
		_ = json.Unmarshal(raw, &h.body)
		mu.Lock()
		defer mu.Unlock()
		if ts, err := strconv.ParseInt(h.ts, 10, 64); err != nil || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Minute || !verify(replicatefake.DefaultWebhookSecret, h, raw) {
			bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		got = append(got, h)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []hook {
			mu.Lock()
			defer mu.Unlock()
			return append([]hook(nil), got...)
		}, func() int {
			mu.Lock()
			defer mu.Unlock()
			return bad
		}
}

func statuses(hs []hook) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.body["status"].(string))
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestWebhooks: signed deliveries for the filtered events, in order; the
// default filter is output and completed; faults duplicate (same id),
// reorder, drop and forge them.
func TestWebhooks(t *testing.T) {
	f, srv := start(t)
	rcv, got, bad := hookReceiver(t)
	create := func(filter string) string {
		body := `{"version":"v","input":{"duration_ms":10,"steps":2,"output":"o"},"webhook":"` + rcv.URL + `"` + filter + `}`
		_, _, p := do(t, srv, http.MethodPost, "/v1/predictions", body)
		return p["id"].(string)
	}
	create(`,"webhook_events_filter":["start","logs","completed"]`)
	waitFor(t, "4 deliveries", func() bool { return len(got()) == 4 })
	if s := statuses(got()); strings.Join(s, ",") != "starting,processing,processing,succeeded" {
		t.Fatalf("statuses = %v", s)
	}

	create("")
	waitFor(t, "2 more deliveries", func() bool { return len(got()) == 6 })
	if hs := got()[4:]; hs[0].body["output"] != "o" || hs[1].body["status"] != "succeeded" {
		t.Fatalf("default filter deliveries = %v", statuses(hs))
	}

	f.SetWebhookFaults(replicatefake.WebhookFaults{Duplicate: true, Reorder: true})
	create(`,"webhook_events_filter":["start","completed"]`)
	waitFor(t, "4 more deliveries", func() bool { return len(got()) == 10 })
	hs := got()[6:]
	if hs[0].id != hs[1].id || hs[0].body["status"] != "succeeded" || hs[3].body["status"] != "starting" {
		t.Fatalf("duplicated, reordered deliveries = %v", statuses(hs))
	}

	f.SetWebhookFaults(replicatefake.WebhookFaults{Drop: func(event string, _ int) bool { return event == "completed" }})
	id := create(`,"webhook_events_filter":["start","completed"]`)
	waitFor(t, "the prediction to end", func() bool { return f.Status(id) == "succeeded" })
	waitFor(t, "the start delivery", func() bool { return len(got()) == 11 })

	f.SetWebhookFaults(replicatefake.WebhookFaults{Secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("forged"))})
	create(`,"webhook_events_filter":["start"]`)
	waitFor(t, "a refused forgery", func() bool { return bad() == 1 })
	if f.WebhooksAccepted() != 11 {
		t.Fatalf("accepted = %d, want 11", f.WebhooksAccepted())
	}
	if sig, err := replicatefake.Sign(replicatefake.DefaultWebhookSecret, "msg_1", 1700000000, []byte("{}")); err != nil || !verify(replicatefake.DefaultWebhookSecret, hook{id: "msg_1", ts: "1700000000", sig: sig}, []byte("{}")) {
		t.Fatalf("Sign = %q, %v", sig, err)
	}
}

func TestCreatesPerMinute(t *testing.T) {
	f := replicatefake.New(replicatefake.Config{CreatesPerMinute: 2})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Cleanup(f.Close)
	for i, want := range []int{http.StatusCreated, http.StatusCreated, http.StatusTooManyRequests} {
		code, h, p := do(t, srv, http.MethodPost, "/v1/predictions", `{"version":"v","input":{}}`)
		if code != want {
			t.Fatalf("create %d = %d %v, want %d", i+1, code, p, want)
		}
		if code == http.StatusTooManyRequests {
			if n, err := strconv.Atoi(h.Get("Retry-After")); err != nil || n < 1 || n > 60 || !strings.Contains(p["detail"].(string), "throttled") {
				t.Fatalf("throttled answer: Retry-After %q, %v", h.Get("Retry-After"), p)
			}
		}
	}
	if f.CreatedTotal() != 2 {
		t.Fatalf("created %d, want 2", f.CreatedTotal())
	}
}
