package devstack

import "net/http"

// webHandler serves the web UI. Replaced by web.Handler once web/ lands.
func webHandler() http.Handler { return http.NotFoundHandler() }
