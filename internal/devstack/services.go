package devstack

import (
	"context"
	"net"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/notifier"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
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

func (s *Stack) startIngest(ctx context.Context, ln net.Listener) (func(context.Context) error, error) {
	nc, js, err := s.connect(ctx, "beamline-ingest")
	if err != nil {
		return nil, err
	}
	cfg := ingest.Config{Listener: ln, Kinds: config.KindNames(s.cfg.Kinds), Secret: s.cfg.Secret, TracerProvider: tracerProvider()}
	if s.cfg.Tune.Ingest != nil {
		s.cfg.Tune.Ingest(&cfg)
	}
	reg := config.NewRegistry()
	svc, err := ingest.New(cfg, nc, js, s.log.With("service", "ingest"), reg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return s.withTelemetry("ingest", nc, reg, nil, s.wrap(svc, nc.Close))
}

func (s *Stack) startProcessor(ctx context.Context, ln net.Listener) (func(context.Context) error, error) {
	nc, js, err := s.connect(ctx, "beamline-processor")
	if err != nil {
		return nil, err
	}
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
			nc.Close()
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
	reg := config.NewRegistry()
	svc, err := processor.New(cfg, nc, js, s.log.With("service", "processor"), reg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return s.withTelemetry("processor", nc, reg, nil, s.wrap(svc, nc.Close))
}

func (s *Stack) startNotifier(ctx context.Context, ln net.Listener) (func(context.Context) error, error) {
	nc, js, err := s.connect(ctx, "beamline-notifier")
	if err != nil {
		return nil, err
	}
	cfg := notifier.Config{Listener: ln, Secret: s.cfg.Secret, Static: s.pageHandler(), TracerProvider: tracerProvider()}
	if s.cfg.Tune.Notifier != nil {
		s.cfg.Tune.Notifier(&cfg)
	}
	reg := config.NewRegistry()
	svc, err := notifier.New(cfg, nc, js, s.log.With("service", "notifier"), reg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return s.withTelemetry("notifier", nc, reg, svc, s.wrap(svc, nc.Close))
}
