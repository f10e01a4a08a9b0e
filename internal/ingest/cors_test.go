package ingest

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/beamline/beamline/internal/testutil"
)

const appOrigin = "https://app.example.com"

// corsDo sends a request with a plain client: a preflight is not an
// operation of api/openapi.yaml, so the validating transport is bypassed.
func corsDo(t *testing.T, h *harness, method, path, body string, header map[string]string) response {
	t.Helper()
	req := mustRequest(t, method, h.url+path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, b := testutil.Do(t, http.DefaultClient, req)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func preflight(origin string) map[string]string {
	return map[string]string{
		"Origin":                         origin,
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "authorization,content-type,idempotency-key,traceparent",
	}
}

func varies(h http.Header, name string) bool {
	for _, v := range h.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), name) {
				return true
			}
		}
	}
	return false
}

func TestCORSPreflight(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.CORSOrigins = []string{"https://App.Example.com", "http://localhost:3000"} })
	for _, path := range []string{"/v1/jobs", "/v1/jobs/j1", "/v1/jobs/j1/outputs/out.png"} {
		r := corsDo(t, h, http.MethodOptions, path, "", preflight(appOrigin))
		if r.Status != http.StatusNoContent {
			t.Fatalf("preflight %s from an allowed origin: %d %s", path, r.Status, r.Body)
		}
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != appOrigin {
			t.Errorf("Allow-Origin %q, want %q", got, appOrigin)
		}
		methods := r.Header.Get("Access-Control-Allow-Methods")
		for _, m := range []string{"GET", "POST", "DELETE"} {
			if !strings.Contains(methods, m) {
				t.Errorf("Allow-Methods %q lacks %s", methods, m)
			}
		}
		allowHeaders := strings.ToLower(r.Header.Get("Access-Control-Allow-Headers"))
		for _, hd := range []string{"authorization", "content-type", "idempotency-key", "traceparent"} {
			if !strings.Contains(allowHeaders, hd) {
				t.Errorf("Allow-Headers %q lacks %s", allowHeaders, hd)
			}
		}
		if r.Header.Get("Access-Control-Max-Age") == "" {
			t.Error("no Access-Control-Max-Age")
		}
		if !varies(r.Header, "Origin") {
			t.Errorf("Vary %q lacks Origin", r.Header.Values("Vary"))
		}
	}

	// Another origin: 403 with the JSON error, and no CORS header.
	r := corsDo(t, h, http.MethodOptions, "/v1/jobs", "", preflight("https://evil.example.net"))
	if r.Status != http.StatusForbidden || r.errorCode(t) != CodeForbidden {
		t.Fatalf("preflight from another origin: %d %s", r.Status, r.Body)
	}
	for k := range r.Header {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("refused preflight carries %s", k)
		}
	}
	if !strings.Contains(string(r.Body), `\"https://evil.example.net\"`) {
		t.Errorf("the refusal does not name the origin: %s", r.Body)
	}
	// A non-ASCII origin is quoted safely, not echoed raw.
	r = corsDo(t, h, http.MethodOptions, "/v1/jobs", "", preflight("https://ÄÖ.example"))
	if r.Status != http.StatusForbidden || !strings.Contains(string(r.Body), `\\u00c4`) {
		t.Errorf("non-ASCII origin: %d %s", r.Status, r.Body)
	}
}

func TestCORSNoOriginsConfigured(t *testing.T) {
	h := newHarness(t, nil)
	r := corsDo(t, h, http.MethodOptions, "/v1/jobs", "", preflight(appOrigin))
	if r.Status != http.StatusForbidden || r.errorCode(t) != CodeForbidden {
		t.Fatalf("preflight with no -cors-origins: %d %s", r.Status, r.Body)
	}
	if r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("Allow-Origin set with no origins configured")
	}
	// An OPTIONS that is no preflight is the API's own 405, as before.
	r = corsDo(t, h, http.MethodOptions, "/v1/jobs", "", nil)
	if r.Status != http.StatusMethodNotAllowed {
		t.Errorf("plain OPTIONS: %d", r.Status)
	}
}

func TestCORSSimpleResponses(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.CORSOrigins = []string{appOrigin} })
	body := `{"kind":"image","input":{"prompt":"x"}}`
	hdr := func(origin string) map[string]string {
		return map[string]string{"Origin": origin, "Authorization": "Bearer " + token(t, "alice"), "Content-Type": "application/json"}
	}
	r := corsDo(t, h, http.MethodPost, "/v1/jobs", body, hdr(appOrigin))
	if r.Status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.Status, r.Body)
	}
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != appOrigin {
		t.Errorf("Allow-Origin %q on a simple answer", got)
	}
	if !varies(r.Header, "Origin") {
		t.Errorf("Vary %q lacks Origin", r.Header.Values("Vary"))
	}
	if !strings.Contains(r.Header.Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Error("Retry-After is not exposed")
	}
	// Errors carry the header too, so the app can read them.
	r = corsDo(t, h, http.MethodGet, "/v1/jobs/nope", "", hdr(appOrigin))
	if r.Status != http.StatusNotFound || r.Header.Get("Access-Control-Allow-Origin") != appOrigin {
		t.Errorf("404 to an allowed origin: %d, Allow-Origin %q", r.Status, r.Header.Get("Access-Control-Allow-Origin"))
	}
	// Another origin is served (the browser, not ingest, enforces CORS)
	// but without the header that would let its script read the answer.
	r = corsDo(t, h, http.MethodPost, "/v1/jobs", body, hdr("https://evil.example.net"))
	if r.Status != http.StatusAccepted || r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another origin: %d, Allow-Origin %q", r.Status, r.Header.Get("Access-Control-Allow-Origin"))
	}
	// Outside /v1 nothing changes.
	r = corsDo(t, h, http.MethodGet, "/healthz", "", map[string]string{"Origin": appOrigin})
	if r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("/healthz answers with CORS")
	}
}

func TestParseOrigins(t *testing.T) {
	got, err := ParseOrigins(" https://App.example.com ,http://localhost:3000,,https://x.example/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"https://app.example.com", "http://localhost:3000", "https://x.example"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, err := ParseOrigins(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %q %v", got, err)
	}
	for _, bad := range []string{"*", "app.example.com", "ftp://x.example", "https://x.example/app", "https://u@x.example", "https://x.example?q=1", "https://"} {
		if _, err := ParseOrigins(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
		if _, err := (Config{Kinds: []string{"image"}, Secret: testSecret, CORSOrigins: []string{bad}}).withDefaults(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Config with %q: %v", bad, err)
		}
	}
}
