// Package ops serves what every binary exposes to operators: /metrics,
// /healthz (the process is alive) and /readyz (NATS connected and the streams
// present), and runs HTTP servers with timeouts and a graceful shutdown.
package ops

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/streams"
)

// Check is a readiness check: nil means ready.
type Check func(ctx context.Context) error

// NATSReady is ready while nc is connected and the JOBS, EVENTS and
// job_status streams exist.
func NATSReady(nc *nats.Conn, js jetstream.JetStream) Check {
	return func(ctx context.Context) error {
		if !nc.IsConnected() {
			return errors.New("nats not connected")
		}
		for _, name := range []string{streams.Jobs, streams.Events, "KV_" + streams.JobStatus} {
			if _, err := js.Stream(ctx, name); err != nil {
				return errors.New("stream " + name + ": " + err.Error())
			}
		}
		return nil
	}
}

// Register adds /metrics, /healthz and /readyz to mux.
func Register(mux *http.ServeMux, g prometheus.Gatherer, ready Check) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if ready != nil {
			if err := ready(ctx); err != nil {
				httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
				return
			}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// NewServer returns an http.Server with timeouts that keep slow or idle
// clients from holding connections forever. WriteTimeout is left to the
// handlers: the notifier's WebSockets and SSE streams live long.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// Serve runs srv on ln until ctx ends, then shuts it down gracefully within
// grace. It returns nil after a clean shutdown.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// Listen returns ln when it is set, else a TCP listener on addr.
func Listen(ln net.Listener, addr string) (net.Listener, error) {
	if ln != nil {
		return ln, nil
	}
	return net.Listen("tcp", addr)
}
