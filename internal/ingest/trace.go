package ingest

import (
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/telemetry"
)

// Trace context. Every API request runs inside a server span, the child of
// the request's W3C traceparent when it has a valid one (an invalid header
// is ignored, as W3C Trace Context asks). Messages published while handling
// it (the job, the cancel notice, the events jobstore writes) carry the
// span's traceparent: telemetry.Traceparent(ctx). With tracing off the
// provider is a no-op and an incoming traceparent travels on unchanged.

// traced wraps the handler of one route in its server span. Without a
// TracerProvider there is no span to make: the request's traceparent, when
// it has one, is only extracted so that it travels on, and a request
// without one goes to h as it is (no context, span or status recorder per
// request).
func (s *Service) traced(route string, h http.Handler) http.Handler {
	if s.cfg.TracerProvider == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, ok := r.Header["Traceparent"]; !ok {
				h.ServeHTTP(w, r)
				return
			}
			h.ServeHTTP(w, r.WithContext(telemetry.Propagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))))
		})
	}
	name := "ingest " + route
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := telemetry.Propagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := s.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("http.route", route)))
		defer span.End()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r.WithContext(ctx))
		code := rec.code
		if code == 0 {
			code = http.StatusOK
		}
		span.SetAttributes(attribute.Int("http.response.status_code", code))
		if code >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(code))
		}
	})
}
