package telemetry

import (
	"context"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// GlobalTracerProvider is the provider a binary hands its service after
// SetupTracing: the global one when tracing is on, else nil (no tracing,
// not even no-op spans).
func GlobalTracerProvider() trace.TracerProvider {
	if on, _ := TracingEnabled(); on {
		return otel.GetTracerProvider()
	}
	return nil
}

// RunWithMetrics runs run(ctx) beside a Publisher of g on
// beamline.metrics.<service>.<random instance> and, when out is not nil
// (the notifier), an Aggregator broadcasting admin:metrics to out. It
// returns run's error once all of them stopped.
func RunWithMetrics(ctx context.Context, nc *nats.Conn, service string, g prometheus.Gatherer, out Broadcaster,
	log *slog.Logger, run func(context.Context) error) error {
	pub, err := NewPublisher(nc, PublisherConfig{Service: service, Gatherer: g, Logger: log})
	if err != nil {
		return err
	}
	var agg *Aggregator
	if out != nil {
		if agg, err = NewAggregator(nc, out, AggregatorConfig{Logger: log}); err != nil {
			return err
		}
	}
	tctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = pub.Run(tctx) })
	if agg != nil {
		wg.Go(func() { _ = agg.Run(tctx) })
	}
	err = run(ctx)
	stop()
	wg.Wait()
	return err
}
