package telemetry

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

var propagator = propagation.TraceContext{}

// Propagator is the W3C TraceContext propagator Beamline uses on HTTP and
// NATS headers (traceparent, tracestate).
func Propagator() propagation.TextMapPropagator { return propagator }

// HeaderCarrier adapts nats.Header to propagation.TextMapCarrier. Keys are
// used as given (the W3C names are lower-case: traceparent, tracestate);
// NATS headers are case-sensitive.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set replaces the values of key.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// Inject writes the trace context of ctx's span into h (nothing when ctx has
// no valid span context). h must not be nil.
func Inject(ctx context.Context, h nats.Header) { propagator.Inject(ctx, HeaderCarrier(h)) }

// Extract returns ctx with the remote span context carried by h, if valid.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return propagator.Extract(ctx, HeaderCarrier(h))
}

// Traceparent is the W3C traceparent of ctx's span context ("" when none):
// the value to put on a message published under ctx. It works with the
// no-op provider too: a remote parent extracted from a message travels on.
func Traceparent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c["traceparent"]
}

// ContextWithTraceparent returns ctx carrying tp as its remote parent span
// context; an invalid tp leaves ctx as it is (W3C: ignore it).
func ContextWithTraceparent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

// SpanContextOf parses a traceparent (zero SpanContext when invalid).
func SpanContextOf(tp string) trace.SpanContext {
	return trace.SpanContextFromContext(ContextWithTraceparent(context.Background(), tp))
}
