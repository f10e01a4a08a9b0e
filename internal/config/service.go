package config

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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/telemetry"
)

// RunFunc is the body of a binary: it parses args, runs until ctx is done
// (SIGINT or SIGTERM) and returns why it stopped. It writes only to stdout
// and stderr, so tests call it in-process.
type RunFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Exit codes of every Beamline binary.
const (
	ExitOK          = 0   // a clean stop, or -help
	ExitFailed      = 1   // the service failed
	ExitUsage       = 2   // bad flags or configuration (ErrInvalid)
	ExitInterrupted = 130 // a second SIGINT or SIGTERM stopped it at once (128+SIGINT)
)

// Main is the whole main function of a Beamline binary: run under a
// context cancelled by SIGINT or SIGTERM, then exit with ExitCode, after
// printing "name: err" for an error. A second signal while it stops exits
// at once with ExitInterrupted: nothing is lost, as the jobs a processor
// still ran are not acked and JetStream redelivers them after their ack
// wait (to another processor, or to this one when it starts again).
func Main(name string, run RunFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "%s: second %v: stopping at once; jobs still running are redelivered after their ack wait\n", name, sig)
		os.Exit(ExitInterrupted)
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(sigs)
	cancel()
	code := ExitCode(err)
	if code != ExitOK {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	}
	os.Exit(code)
}

// ExitCode maps what a RunFunc returned to the process's exit code.
func ExitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.Is(err, ErrInvalid):
		return ExitUsage
	default:
		return ExitFailed
	}
}

// Invalid marks err as a usage or configuration error (ExitUsage) without
// changing its message.
func Invalid(err error) error {
	if err == nil || errors.Is(err, ErrInvalid) {
		return err
	}
	return invalidError{err}
}

type invalidError struct{ err error }

func (e invalidError) Error() string   { return e.err.Error() }
func (e invalidError) Unwrap() []error { return []error{ErrInvalid, e.err} }

// Parse parses args into fs. -help returns flag.ErrHelp; a bad flag or a
// positional argument (no binary takes any) is Invalid.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return Invalid(err)
	}
	if fs.NArg() > 0 {
		return Invalid(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	return nil
}

// Logger builds the logger the flags ask for, writing to w.
func (c *Common) Logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("%w: -log-level: %v", ErrInvalid, err)
	}
	log, err := telemetry.NewLogger(c.LogFormat, w, lvl)
	return log, Invalid(err)
}

// Connect connects service ("ingest", "processor", "notifier") to -nats
// on its own inbox prefix and applies streams/ under jsm.SetupTimeout.
func (c *Common) Connect(ctx context.Context, service string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := natsx.Connect(ctx, c.NATSURL, "beamline-"+service, log, natsx.Inbox(service))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err == nil {
		err = jsm.Setup(ctx, js, c.StreamOptions())
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// StreamOptions are the flags' say in how streams/ is applied.
func (c *Common) StreamOptions() jsm.Options {
	return jsm.Options{Replicas: c.Replicas, EventsMaxAge: c.EventsMaxAge, StatusTTL: c.StatusTTL, DLQMaxAge: c.DLQMaxAge}
}

// NewRegistry is a binary's own metrics registry, with the Go runtime and
// process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Deps is what Serve hands the constructor of a service.
type Deps struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Registry *prometheus.Registry
	// Tracer is the global tracer provider, set up from the standard
	// OTEL_* variables (a no-op without them).
	Tracer trace.TracerProvider
}

// Service is a built service: Run runs it until ctx is done. Admin, when
// set (the notifier), receives the admin:metrics figures.
type Service struct {
	Run   func(ctx context.Context) error
	Admin telemetry.Broadcaster
}

// Serve is the second half of every service binary: Connect (NATS, streams
// under jsm.SetupTimeout), tracing as beamline-<service>, the binary's own
// registry (NewRegistry), then build and run the service beside its
// metrics publisher (telemetry.RunWithMetrics) until ctx is done. An error
// of build is Invalid: it can only be the configuration's.
func (c *Common) Serve(ctx context.Context, service string, log *slog.Logger, build func(Deps) (Service, error)) error {
	nc, js, err := c.Connect(ctx, service, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	shutdownTracing, err := telemetry.SetupTracing(ctx, "beamline-"+service)
	if err != nil {
		return Invalid(err)
	}
	defer func() { _ = shutdownTracing(context.WithoutCancel(ctx)) }()
	reg := NewRegistry()
	svc, err := build(Deps{NC: nc, JS: js, Registry: reg, Tracer: telemetry.GlobalTracerProvider()})
	if err != nil {
		return Invalid(err)
	}
	return telemetry.RunWithMetrics(ctx, nc, service, reg, svc.Admin, log, svc.Run)
}
