package compose

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// TestComposeGateway: one Caddy gateway is the public door, it mounts the
// committed Caddyfile, and that file sends each path to the service that
// serves it, at the host and port compose.yaml gives that service.
func TestComposeGateway(t *testing.T) {
	p := mustLoad(t)
	var gw []string
	for name, s := range p.Services {
		if isGateway(s) {
			gw = append(gw, name)
		}
	}
	if len(gw) != 1 {
		t.Fatalf("want one gateway service (image caddy:2), got %v", gw)
	}
	g := p.Services[gw[0]]
	if g.Image != "caddy:2" {
		t.Errorf("gateway image %q, want the official caddy:2", g.Image)
	}
	mounted := false
	for _, v := range g.Volumes {
		if v.Target == "/etc/caddy/Caddyfile" && v.ReadOnly && filepath.Base(filepath.Dir(v.Source)) == "deploy" && filepath.Base(v.Source) == "Caddyfile" {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("deploy/Caddyfile is not mounted read-only at /etc/caddy/Caddyfile: %+v", g.Volumes)
	}
	if !slices.ContainsFunc(g.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/data" && v.Type == types.VolumeTypeVolume }) {
		t.Errorf("Caddy's /data (certificates) is not a named volume: %+v", g.Volumes)
	}
	published := map[string]bool{}
	for _, port := range g.Ports {
		published[fmt.Sprintf("%s/%d", port.Published, port.Target)] = true
	}
	for _, want := range []string{"80/80", "443/443"} {
		if !published[want] {
			t.Errorf("gateway does not publish %s: %+v", want, g.Ports)
		}
	}
	if env(g, "BEAMLINE_SITE") != "localhost" {
		t.Errorf("BEAMLINE_SITE defaults to %q, want localhost", env(g, "BEAMLINE_SITE"))
	}

	// Upstreams by binary, from compose.yaml: service name and -addr port.
	upstreams := map[string][]string{}
	for name, s := range p.Services {
		bin := binaryOf(s)
		if bin == "" {
			continue
		}
		addr, _ := flagValue(s.Command, "addr")
		_, port, _ := strings.Cut(addr, ":")
		upstreams[bin] = append(upstreams[bin], name+":"+port)
		if bin == "ingest" || bin == "notifier" {
			d, ok := g.DependsOn[name]
			if !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("gateway does not wait for %s to be healthy", name)
			}
			if len(s.Ports) != 0 {
				t.Errorf("%s publishes %+v: the gateway is the one public door", name, s.Ports)
			}
		}
	}
	for _, u := range upstreams {
		slices.Sort(u)
	}

	site, routes := gatewayRoutes(t, readCaddyfile(t))
	if site != "{$BEAMLINE_SITE:localhost}" {
		t.Errorf("site address %q, want {$BEAMLINE_SITE:localhost} (TLS for the configured domain)", site)
	}
	cases := []struct {
		path, to string // to: a binary, or "404"
	}{
		{"/v1/jobs", "ingest"},
		{"/v1/jobs/j-1", "ingest"},
		{"/v1/jobs/j-1/outputs/out.png", "ingest"},
		{"/v1/jobs/j-1/outputs/out.png/link", "ingest"},
		{"/v1/jobs/batch", "ingest"},
		{"/v1/schedules", "ingest"},
		{"/v1/admin/dlq/redrive", "ingest"},
		{"/v1/jobs/j-1/events", "notifier"},
		{"/socket/websocket", "notifier"},
		{"/socket/longpoll", "notifier"},
		{"/beamline.js", "notifier"},
		{"/react.js", "notifier"},
		{"/beamline.d.ts", "notifier"},
		{"/admin", "notifier"},
		{"/admin.js", "notifier"},
		{"/style.css", "notifier"},
		{"/favicon.svg", "notifier"},
		{"/", "notifier"},
		{"/metrics", "404"},
		{"/healthz", "404"},
		{"/readyz", "404"},
		{"/v2/jobs", "404"},
		{"/x/../etc/passwd", "404"},
	}
	for _, c := range cases {
		r := routeOf(t, routes, c.path)
		if c.to == "404" {
			if r.respond != 404 || len(r.upstreams) > 0 {
				t.Errorf("%s: served by %q (upstreams %v), want a 404", c.path, r.name, r.upstreams)
			}
			continue
		}
		got := slices.Sorted(slices.Values(r.upstreams))
		if !slices.Equal(got, upstreams[c.to]) {
			t.Errorf("%s: proxied to %v by %q, want every %s service %v", c.path, got, r.name, c.to, upstreams[c.to])
		}
		if r.healthURI != "/readyz" {
			t.Errorf("%s: %q has health_uri %q, want /readyz", c.path, r.name, r.healthURI)
		}
		// Sticky-free balancing, but for long-poll, whose sessions live in
		// one notifier.
		wantPolicy := "least_conn"
		if c.to == "ingest" {
			wantPolicy = ""
		}
		if strings.HasPrefix(c.path, "/socket/longpoll") {
			wantPolicy = "cookie"
		}
		if r.policy != wantPolicy {
			t.Errorf("%s: lb_policy %q, want %q", c.path, r.policy, wantPolicy)
		}
	}
}
