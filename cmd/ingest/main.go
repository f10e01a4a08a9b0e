// Command ingest is Beamline's HTTP API for submitting and reading jobs
// (POST /v1/jobs, GET and DELETE /v1/jobs/{id}; see api/openapi.yaml), with
// /metrics, /healthz and /readyz beside it. The token secret is read from
// $BEAMLINE_AUTH_SECRET, never from a flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the exit code: 0 after a clean stop or --help, 2 for bad
// flags or configuration, 1 when the service failed.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var common config.Common
	common.Register(fs)
	addr := fs.String("addr", ingest.DefaultAddr, "listen address (API, /metrics, /healthz, /readyz)")
	maxBody := fs.Int64("max-body", ingest.DefaultMaxBody, "largest request body in bytes (larger: 413)")
	maxInFlight := fs.Int("max-inflight", ingest.DefaultMaxInFlight, "submissions handled at once (beyond: 429 with Retry-After)")
	timeout := fs.Duration("request-timeout", ingest.DefaultRequestTimeout, "bound on each NATS round trip of a request (beyond: 503)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ingest [flags]\n\n"+
			"Serves the Beamline job API: POST /v1/jobs, GET and DELETE /v1/jobs/{id}.\n"+
			"The HS256 token secret (at least %d bytes) is read from $%s.\n\nFlags:\n", auth.MinSecretLen, auth.EnvSecret)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(code int, err error) int {
		fmt.Fprintln(stderr, "ingest:", err)
		return code
	}
	if fs.NArg() > 0 {
		return fail(2, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	secret, err := config.Secret(auth.EnvSecret)
	if err != nil {
		return fail(2, fmt.Errorf("refusing to start without a token secret: set $%s (at least %d bytes)", auth.EnvSecret, auth.MinSecretLen))
	}
	if len(secret) < auth.MinSecretLen {
		return fail(2, fmt.Errorf("refusing to start: $%s is shorter than %d bytes", auth.EnvSecret, auth.MinSecretLen))
	}
	kinds, err := common.ParsedKinds()
	if err != nil {
		return fail(2, err)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(common.LogLevel)); err != nil {
		return fail(2, fmt.Errorf("-log-level: %w", err))
	}
	log, err := telemetry.NewLogger(common.LogFormat, stderr, lvl)
	if err != nil {
		return fail(2, err)
	}

	nc, err := natsx.Connect(ctx, common.NATSURL, "beamline-ingest", log, natsx.Inbox("ingest"))
	if err != nil {
		return fail(1, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(1, err)
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = jsm.ApplyStreams(actx, js, jsm.Options{Replicas: common.Replicas})
	cancel()
	if err != nil {
		return fail(1, err)
	}
	shutdownTracing, err := telemetry.SetupTracing(ctx, "beamline-ingest")
	if err != nil {
		return fail(2, err)
	}
	defer func() { _ = shutdownTracing(context.WithoutCancel(ctx)) }()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc, err := ingest.New(ingest.Config{
		Addr:           *addr,
		Kinds:          config.KindNames(kinds),
		Secret:         secret,
		MaxBody:        *maxBody,
		MaxInFlight:    *maxInFlight,
		RequestTimeout: *timeout,
		TracerProvider: telemetry.GlobalTracerProvider(),
	}, nc, js, log, reg)
	if err != nil {
		return fail(2, err)
	}
	if err := telemetry.RunWithMetrics(ctx, nc, "ingest", reg, nil, log, svc.Run); err != nil {
		return fail(1, err)
	}
	return 0
}
