// Package web holds Beamline's browser assets — the beamline.js client (on
// the vendored official Phoenix client, phoenix.mjs), its React hook and
// types, the demo page and the admin dashboard — embedded in the binary so
// the notifier can serve them with no build step and no CDN.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/beamline/beamline/internal/httpx"
)

//go:embed *.html *.js *.mjs *.d.ts *.css *.svg
var files embed.FS

// FS is the embedded asset tree (read-only).
var FS fs.FS = files

// contentTypes are set explicitly: mime.TypeByExtension reads the host's
// tables, which map ".ts" to MPEG transport streams on some systems.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".ts":   "application/typescript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// csp allows only same-origin scripts, styles and connections (plus
// WebSockets to any host, for deployments that put the notifier elsewhere).
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self' ws: wss: http: https:; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// Handler serves / (the demo page), /admin (the dashboard) and the assets.
// Unknown paths get a JSON 404 like every other Beamline HTTP error.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serve(w, r, true) })
}

// ClientHandler serves what every notifier serves: the client
// (/beamline.js, the official Phoenix client it imports, /phoenix.mjs,
// /react.js and their .d.ts), the dashboard (/admin and its
// scripts) and the shared assets. The demo page (/, /index.html, /app.js,
// /studio.js) is a devstack feature, or the notifier's -demo flag
// (Handler); here it answers 404.
func ClientHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serve(w, r, false) })
}

// demoOnly are the files only the demo page uses.
var demoOnly = map[string]bool{"index.html": true, "app.js": true, "studio.js": true}

func serve(w http.ResponseWriter, r *http.Request, demo bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "only GET and HEAD are served here")
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	switch name {
	case "":
		name = "index.html"
	case "admin", "admin/":
		name = "admin.html"
	}
	b, err := files.ReadFile(name)
	if err != nil || strings.Contains(name, "/") || !demo && demoOnly[name] {
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no such page or asset")
		return
	}
	ext := path.Ext(name)
	h := w.Header()
	etag := etagOf(name, b)
	h.Set("ETag", etag)
	if ct, ok := contentTypes[ext]; ok {
		h.Set("Content-Type", ct)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Assets are not fingerprinted: browsers revalidate every time (a 304
	// by ETag), which never serves stale code after an upgrade.
	h.Set("Cache-Control", "no-cache")
	if ext == ".html" {
		h.Set("Content-Security-Policy", csp)
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

var etags sync.Map // name -> quoted ETag

func etagOf(name string, b []byte) string {
	if v, ok := etags.Load(name); ok {
		return v.(string)
	}
	sum := sha256.Sum256(b)
	e := `"` + hex.EncodeToString(sum[:8]) + `"`
	etags.Store(name, e)
	return e
}
