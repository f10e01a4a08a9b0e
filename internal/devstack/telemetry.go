package devstack

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/telemetry"
)

// withTelemetry runs beside a service what each binary runs beside its
// own: a metrics publisher reading the service's own registry (so
// admin:metrics shows the same instruments /metrics serves) and, for the
// notifier (out != nil), the aggregator that broadcasts admin:metrics.
func (s *Stack) withTelemetry(service string, nc *nats.Conn, g prometheus.Gatherer, out telemetry.Broadcaster,
	run func(context.Context) error) (func(context.Context) error, error) {
	log := s.log.With("service", service)
	pub, err := telemetry.NewPublisher(nc, telemetry.PublisherConfig{Service: service, Gatherer: g, Logger: log})
	if err != nil {
		return nil, err
	}
	var agg *telemetry.Aggregator
	if out != nil {
		if agg, err = telemetry.NewAggregator(nc, out, telemetry.AggregatorConfig{Logger: log}); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context) error {
		tctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = pub.Run(tctx) })
		if agg != nil {
			wg.Go(func() { _ = agg.Run(tctx) })
		}
		err := run(ctx)
		stop()
		wg.Wait()
		return err
	}, nil
}

// tracerProvider is the global provider when the OTEL_* environment turns
// tracing on (cmd/devstack installs it with telemetry.SetupTracing), else
// nil: no tracing at all. Tune may set a provider per service.
func tracerProvider() trace.TracerProvider {
	if on, _ := telemetry.TracingEnabled(); on {
		return otel.GetTracerProvider()
	}
	return nil
}
