// Command notifier pushes job status to browsers over WebSockets (Phoenix
// Channels V2 at /socket/websocket) and Server-Sent Events
// (/v1/jobs/{id}/events). The token secret comes from $BEAMLINE_AUTH_SECRET.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/notifier"
)

// defaultGCPercent is the notifier's GOGC when $GOGC is unset.
const defaultGCPercent = 50

func main() { config.Main("notifier", run) }

// run serves until ctx is done. Bad flags or configuration are
// config.Invalid (exit 2); a failure of the service is any other error.
func run(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs, common := config.NewFlags("notifier", stderr)
	addr := fs.String("addr", notifier.DefaultAddr, "listen address (WebSocket, SSE, /metrics, /healthz, /readyz)")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback `addr` (e.g. 127.0.0.1:6061; empty: off)")
	demo := fs.Bool("demo", false, "also serve the demo page at / (the client files and /admin are always served)")
	presenceNode := fs.String("presence-node", "", "this notifier's name among those sharing presence (a stable name, e.g. the container's, makes a restart replace its former presences at once; default: random)")
	presenceEvery := fs.Duration("presence-interval", 5*time.Second, "presence heartbeat: a notifier silent for 1.5 of these is dropped and its users leave")
	origins := fs.String("allowed-origins", "", "comma-separated Origin values allowed to open WebSockets, or * (default: same origin as the Host)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: notifier [flags]\n\nPushes job status over Phoenix Channels V2 WebSockets and SSE.\nThe token secret is read from $%s.\n\nFlags:\n", auth.EnvSecret)
		fs.PrintDefaults()
	}
	if err := config.Parse(fs, args); err != nil {
		return err
	}
	log, err := common.Logger(stderr)
	if err != nil {
		return err
	}
	secret, err := config.Secret(auth.EnvSecret)
	if err != nil {
		return err
	}
	var allowed []string
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			allowed = append(allowed, o)
		}
	}

	if os.Getenv("GOGC") == "" {
		// Most of a notifier's heap is long-lived per-connection state and
		// little garbage is made per push, so collecting at 50 % growth
		// instead of 100 % costs little CPU and keeps idle connections
		// within the 16 KB budget (RSS 14.8 -> 12.5 KiB per idle
		// connection at 15,000). $GOGC overrides it.
		debug.SetGCPercent(defaultGCPercent)
	}
	if *pprofAddr != "" {
		stopPprof, err := servePprof(*pprofAddr)
		if err != nil {
			return config.Invalid(err)
		}
		defer stopPprof()
	}

	return common.Serve(ctx, "notifier", log, func(d config.Deps) (config.Service, error) {
		svc, err := notifier.New(notifier.Config{Addr: *addr, Secret: secret, AllowedOrigins: allowed, Demo: *demo,
			TracerProvider: d.Tracer, PresenceNode: *presenceNode, PresenceInterval: *presenceEvery}, d.NC, d.JS, log, d.Registry)
		if err != nil {
			return config.Service{}, err
		}
		return config.Service{Run: svc.Run, Admin: svc}, nil
	})
}

// servePprof serves net/http/pprof on addr, which must be a loopback
// address: profiles are for whoever runs the process, not for the network.
func servePprof(addr string) (stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("-pprof: %q is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}
