package notifier

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// A notifier run on its own serves the client files and the dashboard that
// apps import from it; the demo page only with Demo (issue 16, item 1).
func TestServesClientAndDashboard(t *testing.T) {
	w := newWorld(t)
	get := func(t *testing.T, n *running, path string) (int, string, string) {
		t.Helper()
		resp, err := http.Get(n.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	files := []struct{ path, ctype, contains string }{
		{"/beamline.js", "text/javascript; charset=utf-8", "export function connect"},
		{"/react.js", "text/javascript; charset=utf-8", "export function createUseJob"},
		{"/beamline.d.ts", "application/typescript; charset=utf-8", "export interface Client"},
		{"/admin", "text/html; charset=utf-8", `src="/admin.js"`},
		{"/admin.js", "text/javascript; charset=utf-8", "admin:metrics"},
		{"/token.js", "text/javascript; charset=utf-8", "export function pageToken"},
		{"/conn.js", "text/javascript; charset=utf-8", "export function connectionIndicator"},
		{"/style.css", "text/css; charset=utf-8", ":root"},
	}
	t.Run("alone", func(t *testing.T) {
		n := startNotifier(t, w, Config{})
		for _, f := range files {
			code, ctype, body := get(t, n, f.path)
			if code != http.StatusOK || ctype != f.ctype || !strings.Contains(body, f.contains) {
				t.Errorf("GET %s = %d %q (has %q: %v)", f.path, code, ctype, f.contains, strings.Contains(body, f.contains))
			}
		}
		for _, p := range []string{"/", "/index.html", "/app.js"} {
			if code, ctype, _ := get(t, n, p); code != http.StatusNotFound || ctype != "application/json" {
				t.Errorf("GET %s without Demo = %d %q, want a JSON 404", p, code, ctype)
			}
		}
		if code, _, _ := get(t, n, "/healthz"); code != http.StatusOK {
			t.Errorf("GET /healthz = %d beside the static files", code)
		}
	})
	t.Run("demo", func(t *testing.T) {
		n := startNotifier(t, w, Config{Demo: true})
		for _, f := range append(files[:1], struct{ path, ctype, contains string }{"/", "text/html; charset=utf-8", `src="/app.js"`},
			struct{ path, ctype, contains string }{"/app.js", "text/javascript; charset=utf-8", "watchUser"}) {
			code, ctype, body := get(t, n, f.path)
			if code != http.StatusOK || ctype != f.ctype || !strings.Contains(body, f.contains) {
				t.Errorf("GET %s with Demo = %d %q", f.path, code, ctype)
			}
		}
	})
}
