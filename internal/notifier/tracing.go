package notifier

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/envelope"
)

// Tracing. A live event read from the stream keeps the span context of its
// message's traceparent (the processor's store write that produced it);
// once its frame is written to a client's socket the notifier records a
// "notifier push" span, the child of that context, from the moment the
// event was read to the write. With Config.TracerProvider nil nothing is
// recorded and nothing is allocated for it.

// eventTrace is what an event carries for its push span.
type eventTrace struct {
	sc   trace.SpanContext
	recv time.Time
}

// traceOf reads the trace context of a stream message's headers.
func (s *Service) traceOf(h interface{ Get(string) string }) eventTrace {
	if s.cfg.TracerProvider == nil {
		return eventTrace{}
	}
	sc := telemetry.SpanContextOf(h.Get(envelope.HeaderTraceparent))
	if !sc.IsValid() {
		return eventTrace{}
	}
	return eventTrace{sc: sc, recv: time.Now()}
}

// tracePush records the push span of a frame just written to topic.
func (s *Service) tracePush(f outFrame) {
	if !f.trace.sc.IsValid() || s.cfg.TracerProvider == nil {
		return
	}
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), f.trace.sc)
	_, span := telemetry.Tracer(s.cfg.TracerProvider).Start(ctx, "notifier push",
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(f.trace.recv),
		trace.WithAttributes(attribute.String("messaging.system", "nats")))
	span.End()
}
