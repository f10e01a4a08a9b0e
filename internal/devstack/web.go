package devstack

import (
	"net/http"

	"github.com/beamline/beamline/web"
)

// webHandler serves the web UI: the demo page, the dashboard and beamline.js.
func webHandler() http.Handler { return web.Handler() }
