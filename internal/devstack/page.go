package devstack

import (
	"net/http"
	"net/http/httputil"
	"net/url"
)

// pageHandler is what the notifier serves beside its WebSocket in devstack:
// the web UI, and /v1/jobs proxied to ingest so that the page talks to one
// origin. In production a gateway in front of both does the same.
func (s *Stack) pageHandler() http.Handler {
	mux := http.NewServeMux()
	target, err := url.Parse(s.IngestURL)
	if err == nil && s.IngestURL != "" {
		proxy := httputil.NewSingleHostReverseProxy(target)
		mux.Handle("/v1/jobs", proxy)
		mux.Handle("/v1/jobs/", proxy)
		mux.Handle("/v1/admin/", proxy)
		mux.Handle("/v1/schedules", proxy)
		mux.Handle("/v1/schedules/", proxy)
	}
	mux.Handle("/", webHandler())
	return mux
}
