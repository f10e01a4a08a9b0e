package devstack

import (
	"context"
	"log/slog"
	"net"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/notifier"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Tuning adjusts service configurations before they are built.
type Tuning struct {
	Ingest    func(*ingest.Config)
	Processor func(*processor.Config)
	Notifier  func(*notifier.Config)
}

// services lists the parts in start order. Ingest comes first so that the
// notifier, which serves the demo page, knows where to proxy /v1/jobs.
func (s *Stack) services() []*part {
	return []*part{
		{name: "ingest", addr: s.cfg.IngestAddr, start: s.startIngest},
		{name: "processor", addr: s.cfg.ProcessorAddr, start: s.startProcessor},
		{name: "notifier", addr: s.cfg.NotifierAddr, start: s.startNotifier},
	}
}

// runner runs a service and closes its NATS connection once it returned.
type runner interface {
	Run(ctx context.Context) error
}

func (s *Stack) wrap(svc runner, close func()) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		defer close()
		return svc.Run(ctx)
	}
}

// startService connects as beamline-<name>, builds the service on that
// connection with a fresh registry and runs it with its telemetry; a
// service that is a telemetry.Broadcaster (the notifier) also broadcasts
// the aggregated figures. The connection is closed when the service
// returns, or at once when it cannot be built.
func (s *Stack) startService(ctx context.Context, name string,
	build func(*nats.Conn, jetstream.JetStream, *slog.Logger, *prometheus.Registry) (runner, error),
) (func(context.Context) error, error) {
	nc, js, err := s.connect(ctx, "beamline-"+name)
	if err != nil {
		return nil, err
	}
	reg := config.NewRegistry()
	svc, err := build(nc, js, s.log.With("service", name), reg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	out, _ := svc.(telemetry.Broadcaster)
	return s.withTelemetry(name, nc, reg, out, s.wrap(svc, nc.Close))
}

func (s *Stack) startIngest(ctx context.Context, ln net.Listener) (func(context.Context) error, error) {
	return s.startService(ctx, "ingest", func(nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, reg *prometheus.Registry) (runner, error) {
		cfg := ingest.Config{Listener: ln, Kinds: config.KindNames(s.cfg.Kinds), Secret: s.cfg.Secret, TracerProvider: tracerProvider()}
		if s.cfg.Tune.Ingest != nil {
			s.cfg.Tune.Ingest(&cfg)
		}
		return ingest.New(cfg, nc, js, log, reg)
	})
}

func (s *Stack) startProcessor(ctx context.Context, ln net.Listener) (func(context.Context) error, error) {
	return s.startService(ctx, "processor", func(nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, reg *prometheus.Registry) (runner, error) {
		providers := map[string]provider.Provider{}
		for _, k := range append([]config.Kind{{Provider: "sim"}}, s.cfg.Kinds...) {
			if k.Provider == "" || providers[k.Provider] != nil {
				continue
			}
			p, err := provider.New(k.Provider, provider.Config{
				Cog:       provider.CogConfig{URLs: s.cfg.CogURLs},
				Replicate: s.cfg.Replicate,
			})
			if err != nil {
				return nil, err
			}
			providers[k.Provider] = p
		}
		cfg := processor.Config{
			Listener:        ln,
			Kinds:           s.cfg.Kinds,
			Providers:       providers,
			DefaultProvider: "sim",
			TracerProvider:  tracerProvider(),
		}
		if s.cfg.Tune.Processor != nil {
			s.cfg.Tune.Processor(&cfg)
		}
		return processor.New(cfg, nc, js, log, reg)
	})
}

func (s *Stack) startNotifier(ctx context.Context, ln net.Listener) (func(context.Context) error, error) {
	return s.startService(ctx, "notifier", func(nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, reg *prometheus.Registry) (runner, error) {
		cfg := notifier.Config{Listener: ln, Secret: s.cfg.Secret, Static: s.pageHandler(), TracerProvider: tracerProvider()}
		if s.cfg.Tune.Notifier != nil {
			s.cfg.Tune.Notifier(&cfg)
		}
		return notifier.New(cfg, nc, js, log, reg)
	})
}
