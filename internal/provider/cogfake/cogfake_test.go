package cogfake_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider/cogfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func do(t *testing.T, c *http.Client, method, url, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestIdempotencyAsCogDoes pins the behaviours the fake copies from Cog
// (see the package comment): 202 and the state for a PUT of an id in
// flight, 409 when the slots are full, no GET, cancel 200/404, and a new
// prediction for a PUT after the end.
func TestIdempotencyAsCogDoes(t *testing.T) {
	f := cogfake.New(cogfake.Config{Slots: 1})
	srv := httptest.NewServer(f)
	defer srv.Close()
	defer f.Close()
	c := srv.Client()
	async := []string{"Prefer", "respond-async"}

	code, body := do(t, c, http.MethodPut, srv.URL+"/predictions/p1", `{"input":{"duration_ms":600000}}`, async...)
	if code != 202 || body["id"] != "p1" || body["status"] != "starting" {
		t.Fatalf("create = %d %v", code, body)
	}
	code, body = do(t, c, http.MethodPut, srv.URL+"/predictions/p1", `{"input":{"duration_ms":600000}}`)
	if code != 202 || body["status"] != "processing" || body["input"] == nil {
		t.Fatalf("PUT of the id in flight = %d %v, want 202 with its state", code, body)
	}
	if code, _ = do(t, c, http.MethodPut, srv.URL+"/predictions/p2", `{"input":{}}`, async...); code != 409 {
		t.Fatalf("PUT with every slot busy = %d, want 409", code)
	}
	if code, body = do(t, c, http.MethodGet, srv.URL+"/health-check", ``); code != 200 || body["status"] != "BUSY" {
		t.Fatalf("health = %d %v, want BUSY", code, body)
	}
	if code, _ = do(t, c, http.MethodGet, srv.URL+"/predictions/p1", ``); code == 200 {
		t.Fatal("GET /predictions/{id} answered 200; Cog has no polling")
	}
	if code, _ = do(t, c, http.MethodPut, srv.URL+"/predictions/p1", `{"id":"other","input":{}}`); code != 422 {
		t.Fatalf("body id mismatch = %d, want 422", code)
	}
	if code, _ = do(t, c, http.MethodPost, srv.URL+"/predictions/p1/cancel", ``); code != 200 {
		t.Fatalf("cancel = %d, want 200", code)
	}
	waitFor(t, func() bool { return f.InFlight() == 0 })
	if code, _ = do(t, c, http.MethodPost, srv.URL+"/predictions/p1/cancel", ``); code != 404 {
		t.Fatalf("cancel of an ended prediction = %d, want 404", code)
	}
	code, body = do(t, c, http.MethodPut, srv.URL+"/predictions/p1", `{"input":{"output":"x"}}`)
	if code != 200 || body["status"] != "succeeded" || body["output"] != "x" {
		t.Fatalf("synchronous PUT after the end = %d %v", code, body)
	}
	if n := f.Started("p1"); n != 2 {
		t.Fatalf("Started(p1) = %d, want 2: Cog keeps no history", n)
	}
	if code, _ = do(t, c, http.MethodPut, srv.URL+"/predictions/p3", `{"input":{"steps":"many"}}`); code != 422 {
		t.Fatalf("invalid input = %d, want 422", code)
	}
	code, body = do(t, c, http.MethodPut, srv.URL+"/predictions/p4", `{"input":{"fail":"CUDA out of memory"}}`)
	if code != 200 || body["status"] != "failed" || body["error"] != "CUDA out of memory" {
		t.Fatalf("failing prediction = %d %v, want 200 failed", code, body)
	}
	f.SetHealth(cogfake.StatusSetupFailed)
	if code, _ = do(t, c, http.MethodPut, srv.URL+"/predictions/p5", `{"input":{}}`); code != 503 {
		t.Fatalf("PUT while setup failed = %d, want 503", code)
	}
}
