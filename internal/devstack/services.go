package devstack

import (
	"cmp"
	"context"
	"log/slog"
	"net"
	"net/url"
	"strings"

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
		cfg := ingest.Config{Listener: ln, Kinds: config.KindNames(s.cfg.Kinds), Secret: s.cfg.Secret, TracerProvider: tracerProvider(),
			WebhookKey: provider.DeriveWebhookKey(s.cfg.Secret), ReplicateWebhookSecret: s.cfg.ReplicateWebhookSecret}
		if s.cfg.Tune.Ingest != nil {
			s.cfg.Tune.Ingest(&cfg)
		}
		return ingest.New(cfg, nc, js, log, reg)
	})
}

func (s *Stack) startProcessor(ctx context.Context, ln net.Listener) (func(context.Context) error, error) {
	return s.startService(ctx, "processor", func(nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, reg *prometheus.Registry) (runner, error) {
		providers := map[string]provider.Provider{}
		pcfg := provider.Config{Cog: provider.CogConfig{URLs: s.cfg.CogURLs}, Replicate: s.cfg.Replicate}
		hooks, err := s.webhooks()
		if err != nil {
			return nil, err
		}
		if hooks != nil {
			pcfg.Cog.Webhooks = hooks
			if s.replicateWebhooks() {
				pcfg.Replicate.Webhooks = hooks
			}
		}
		for _, k := range append([]config.Kind{{Provider: "sim"}}, s.cfg.Kinds...) {
			if k.Provider == "" || providers[k.Provider] != nil {
				continue
			}
			p, err := provider.New(k.Provider, pcfg)
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
			Webhooks:        hooks,
		}
		if err := s.keepOutputs(js, &cfg); err != nil {
			return nil, err
		}
		if s.cfg.Tune.Processor != nil {
			s.cfg.Tune.Processor(&cfg)
		}
		return processor.New(cfg, nc, js, log, reg)
	})
}

// webhooks is the processor's webhook source: at WebhookURL (default the
// stack's ingest), keyed like ingest from the stack's secret; nil for
// "none" or when no kind is served by cog or replicate.
func (s *Stack) webhooks() (*processor.Webhooks, error) {
	remote := false
	for _, k := range s.cfg.Kinds {
		remote = remote || k.Provider == "cog" || strings.HasPrefix(k.Provider, "replicate:")
	}
	if !remote || s.cfg.WebhookURL == "none" {
		return nil, nil
	}
	return processor.NewWebhooks(cmp.Or(s.cfg.WebhookURL, s.IngestURL), provider.DeriveWebhookKey(s.cfg.Secret))
}

// replicateWebhooks reports whether Replicate's webhooks can be verified
// (ReplicateWebhookSecret) and can reach the webhook URL: the hosted API
// cannot reach a loopback address.
func (s *Stack) replicateWebhooks() bool {
	if s.cfg.ReplicateWebhookSecret == "" {
		return false
	}
	if s.cfg.Replicate.URL != "" && s.cfg.Replicate.URL != provider.DefaultReplicateURL {
		return true // a fake or a proxy on this machine
	}
	u, err := url.Parse(cmp.Or(s.cfg.WebhookURL, s.IngestURL))
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback())
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
