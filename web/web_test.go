package web_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/beamline/beamline/web"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestServesPagesAndAssets(t *testing.T) {
	h := web.Handler()
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `src="/app.js"`},
		{"/admin", "text/html; charset=utf-8", `src="/admin.js"`},
		{"/beamline.js", "text/javascript; charset=utf-8", "export function connect"},
		{"/react.js", "text/javascript; charset=utf-8", "export function createUseJob"},
		{"/phoenix.mjs", "text/javascript; charset=utf-8", "phoenix 1.8.16"},
		{"/beamline.d.ts", "application/typescript; charset=utf-8", "export interface Client"},
		{"/style.css", "text/css; charset=utf-8", ":root"},
		{"/favicon.svg", "image/svg+xml", "<svg"},
	} {
		rec := get(t, h, http.MethodGet, tc.path, nil)
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s = %d", tc.path, rec.Code)
			continue
		}
		if got := rec.Header().Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s Content-Type = %q, want %q", tc.path, got, tc.ctype)
		}
		if !strings.Contains(rec.Body.String(), tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", tc.path)
		}
		if strings.HasSuffix(tc.ctype, "html; charset=utf-8") && !strings.Contains(rec.Header().Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: no CSP", tc.path)
		}
		etag := rec.Header().Get("ETag")
		if etag == "" {
			t.Errorf("GET %s: no ETag", tc.path)
		} else if again := get(t, h, http.MethodGet, tc.path, map[string]string{"If-None-Match": etag}); again.Code != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match = %d, want 304", tc.path, again.Code)
		}
	}
}

func TestErrorsAreJSON(t *testing.T) {
	h := web.Handler()
	for _, tc := range []struct {
		method, path string
		code         int
		errCode      string
	}{
		{http.MethodGet, "/nope.js", http.StatusNotFound, "not_found"},
		{http.MethodGet, "/web.go", http.StatusNotFound, "not_found"},
		{http.MethodGet, "/../go.mod", http.StatusNotFound, "not_found"},
		{http.MethodGet, "/test/client.test.js", http.StatusNotFound, "not_found"},
		{http.MethodPost, "/", http.StatusMethodNotAllowed, "method_not_allowed"},
	} {
		rec := get(t, h, tc.method, tc.path, nil)
		if rec.Code != tc.code {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, rec.Code, tc.code)
			continue
		}
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code != tc.errCode || body.Error.Message == "" {
			t.Errorf("%s %s body = %s", tc.method, tc.path, rec.Body.String())
		}
	}
}

// ClientHandler serves the client and the dashboard, not the demo page.
func TestClientHandlerLeavesOutTheDemo(t *testing.T) {
	h := web.ClientHandler()
	for _, p := range []string{"/beamline.js", "/phoenix.mjs", "/react.js", "/admin", "/admin.js", "/style.css"} {
		if rec := get(t, h, http.MethodGet, p, nil); rec.Code != http.StatusOK {
			t.Errorf("GET %s = %d", p, rec.Code)
		}
	}
	for _, p := range []string{"/", "/index.html", "/app.js", "/studio.js"} {
		if rec := get(t, h, http.MethodGet, p, nil); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, rec.Code)
		}
	}
}
