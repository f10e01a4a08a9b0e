// Package telemetry holds Beamline's logging, metrics and tracing set-up.
package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/lmittmann/tint"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/term"
)

// NewLogger returns the logger of a binary: format "text" uses tint
// (coloured when w is a terminal), "json" the slog JSON handler.
func NewLogger(format string, w io.Writer, level slog.Level) (*slog.Logger, error) {
	switch format {
	case "", "text":
		noColor := true
		if f, ok := w.(*os.File); ok {
			noColor = !term.IsTerminal(int(f.Fd()))
		}
		return slog.New(WithTrace(tint.NewHandler(w, &tint.Options{Level: level, NoColor: noColor, TimeFormat: "15:04:05.000"}))), nil
	case "json":
		return slog.New(WithTrace(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))), nil
	}
	return nil, fmt.Errorf("telemetry: unknown log format %q (want text or json)", format)
}

// LogAttrs returns the trace_id and span_id of ctx's span as slog
// arguments (nil when ctx carries no valid span context), for
// logger.With(telemetry.LogAttrs(ctx)...) where a job is handled.
func LogAttrs(ctx context.Context) []any {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []any{slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String())}
}

// traceHandler adds trace_id and span_id to records logged with a context
// that carries a span (logger.InfoContext(ctx, ...)).
type traceHandler struct{ slog.Handler }

// WithTrace wraps h so that records logged with a context carrying a valid
// span context get trace_id and span_id attributes. NewLogger's handlers
// are wrapped already.
func WithTrace(h slog.Handler) slog.Handler {
	if _, ok := h.(traceHandler); ok {
		return h
	}
	return traceHandler{h}
}

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
