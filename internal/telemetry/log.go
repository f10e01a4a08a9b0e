// Package telemetry holds Beamline's logging, metrics and tracing set-up.
package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"

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

// DeferAttrs wraps h so that Logger.With costs only remembering its
// attributes: tint and slog's own handlers format them at WithAttrs, ahead
// of every record, which is wasted on a logger made per job (the
// processor's) that logs nothing when the job just succeeds. The wrapped
// handler formats them the first time the logger logs, and its output is
// the same as h's.
func DeferAttrs(h slog.Handler) slog.Handler {
	if d, ok := h.(*deferredAttrs); ok {
		return d
	}
	return &deferredAttrs{base: h}
}

type deferredAttrs struct {
	base  slog.Handler
	attrs []slog.Attr
	once  sync.Once
	h     slog.Handler // base with attrs, built by once
}

func (d *deferredAttrs) handler() slog.Handler {
	d.once.Do(func() {
		d.h = d.base
		if len(d.attrs) > 0 {
			d.h = d.base.WithAttrs(d.attrs)
		}
	})
	return d.h
}

// Enabled asks the base handler: a level does not depend on attributes.
func (d *deferredAttrs) Enabled(ctx context.Context, l slog.Level) bool {
	return d.base.Enabled(ctx, l)
}

func (d *deferredAttrs) Handle(ctx context.Context, r slog.Record) error {
	return d.handler().Handle(ctx, r)
}

func (d *deferredAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return d
	}
	return &deferredAttrs{base: d.base, attrs: append(slices.Clip(d.attrs), as...)}
}

// WithGroup formats what it has: the group's attributes go inside it.
func (d *deferredAttrs) WithGroup(name string) slog.Handler {
	return DeferAttrs(d.handler().WithGroup(name))
}
