package processor

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/telemetry"
)

// Tracing. Each attempt of a job runs in a consumer span, the child of the
// traceparent the job message carries (ingest's request span); the provider
// call and every job store write (KV update + event) are its children, and
// every event carries the traceparent of the write that produced it
// (jobstore.Config.Traceparent = traceparentOf), so the notifier's push
// span joins the same trace. Config.TracerProvider nil means no-op spans;
// the message's traceparent then still travels to the events unchanged.

func (p *Processor) tracer() trace.Tracer { return telemetry.Tracer(p.cfg.TracerProvider) }

// startAttempt starts the span of one delivery of d.
func (p *Processor) startAttempt(ctx context.Context, d *delivery) (context.Context, trace.Span) {
	ctx = telemetry.Extract(ctx, d.msg.Headers())
	return p.tracer().Start(ctx, "processor attempt", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", d.msg.Subject()),
			attribute.String("beamline.job", d.job.ID),
			attribute.String("beamline.kind", d.job.Kind),
			attribute.String("beamline.priority", string(d.job.Priority)),
			attribute.Int("beamline.attempt", d.attempt),
		))
}

// startSpan starts an internal child span of ctx's span.
func (p *Processor) startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return p.tracer().Start(ctx, name, trace.WithAttributes(attrs...))
}

// withSpanOf returns ctx carrying the span of from (the job's own context
// hangs off jobBase, not off the attempt's store context).
func withSpanOf(ctx, from context.Context) context.Context {
	return trace.ContextWithSpan(ctx, trace.SpanFromContext(from))
}

// traceparentOf is jobstore's Traceparent hook: the current span's.
func traceparentOf(ctx context.Context) string { return telemetry.Traceparent(ctx) }
