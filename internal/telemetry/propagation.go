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

// TraceIDOf returns the trace id of a W3C traceparent
// ("00-<trace id>-<span id>-<flags>"): its 32 lower-case hex digits, a
// substring of tp (no allocation), or "" when tp is not a valid
// traceparent or its trace id is all zeros. The notifier puts it on every
// push so a job's timeline names each event's trace.
func TraceIDOf(tp string) string {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || tp[:2] == "ff" || (len(tp) > 55 && tp[55] != '-') {
		return ""
	}
	id := tp[3:35]
	zero := true
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c == '0':
		case c >= '1' && c <= '9', c >= 'a' && c <= 'f':
			zero = false
		default:
			return ""
		}
	}
	if zero {
		return ""
	}
	return id
}
