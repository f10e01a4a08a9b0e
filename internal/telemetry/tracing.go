package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ErrTracingConfig is wrapped by errors in the OTEL_* environment.
var ErrTracingConfig = errors.New("telemetry: invalid tracing configuration")

// InstrumentationName names the tracers Beamline's packages create.
const InstrumentationName = "github.com/beamline/beamline"

// TracingEnabled reports whether the standard OpenTelemetry environment asks
// for traces to be exported: OTEL_TRACES_EXPORTER=otlp, or (with it unset)
// an OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
// OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn it off.
func TracingEnabled() (bool, error) {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false, nil
	}
	switch exp := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
		return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q (supported: otlp, none)", ErrTracingConfig, exp)
	}
}

// NewTracerProvider builds the tracer provider of a binary from the standard
// OTEL_* environment: an SDK provider exporting over OTLP/HTTP (endpoint,
// headers, timeout, compression from OTEL_EXPORTER_OTLP_*; sampler from
// OTEL_TRACES_SAMPLER) when TracingEnabled, else a no-op provider that costs
// nothing. shutdown flushes and stops the exporter; it is never nil.
func NewTracerProvider(ctx context.Context, serviceName string) (trace.TracerProvider, func(context.Context) error, error) {
	nop := func(context.Context) error { return nil }
	on, err := TracingEnabled()
	if err != nil || !on {
		return noop.NewTracerProvider(), nop, err
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(k); p != "" {
			if p != "http/protobuf" {
				return noop.NewTracerProvider(), nop, fmt.Errorf("%w: %s=%q (supported: http/protobuf)", ErrTracingConfig, k, p)
			}
			break
		}
	}
	exp, err := otlptracehttp.New(ctx) // reads OTEL_EXPORTER_OTLP_* itself
	if err != nil {
		return noop.NewTracerProvider(), nop, fmt.Errorf("telemetry: otlp exporter: %w", err)
	}
	res, err := serviceResource(serviceName)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return noop.NewTracerProvider(), nop, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

// serviceResource is the SDK's default resource (OTEL_RESOURCE_ATTRIBUTES
// included) with service.name = serviceName unless OTEL_SERVICE_NAME is set.
func serviceResource(serviceName string) (*resource.Resource, error) {
	if os.Getenv("OTEL_SERVICE_NAME") != "" || serviceName == "" {
		return resource.Default(), nil
	}
	res, err := resource.Merge(resource.Default(),
		resource.NewSchemaless(attribute.String("service.name", serviceName)))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}

// SetupTracing is NewTracerProvider for a binary's main: it also installs the
// provider and the W3C TraceContext propagator globally, so that main can
// hand otel.GetTracerProvider() to the services it builds.
func SetupTracing(ctx context.Context, serviceName string) (shutdown func(context.Context) error, err error) {
	tp, shutdown, err := NewTracerProvider(ctx, serviceName)
	if err != nil {
		return shutdown, err
	}
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(Propagator())
	return shutdown, nil
}

// Tracer returns Beamline's tracer from tp; a nil tp gives a no-op tracer
// (libraries take their provider from their Config, never the global one).
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(InstrumentationName)
}

// RecordError marks span as failed with err (nil: nothing).
func RecordError(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}
