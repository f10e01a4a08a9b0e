package ingest

import (
	"context"
	"net/http"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// With tracing on, a submission runs in a server span that is the child of
// the caller's traceparent, and the job message carries that span.
func TestSubmitServerSpan(t *testing.T) {
	exp, tp := testutil.Tracing(t)
	h := newHarness(t, func(c *Config) { c.TracerProvider = tp })

	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := h.submit(token(t, "alice"), `{"kind":"image"}`, withHeader("traceparent", parent))
	if r.Status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	var span sdktrace.ReadOnlySpan
	for _, s := range exp.GetSpans().Snapshots() {
		if s.Name() == "ingest submit" {
			span = s
		}
	}
	if span == nil {
		t.Fatalf("no server span among %v", exp.GetSpans())
	}
	psc := telemetry.SpanContextOf(parent)
	if span.SpanKind() != trace.SpanKindServer || span.Parent().SpanID() != psc.SpanID() || span.SpanContext().TraceID() != psc.TraceID() {
		t.Fatalf("span kind %v parent %v trace %v", span.SpanKind(), span.Parent(), span.SpanContext().TraceID())
	}
	s, err := h.js.Stream(context.Background(), streams.Jobs)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(context.Background(), "jobs.normal.image."+r.snapshot(t).ID)
	if err != nil {
		t.Fatal(err)
	}
	got := telemetry.SpanContextOf(msg.Header.Get(envelope.HeaderTraceparent))
	if got.TraceID() != psc.TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("job traceparent %q: want the server span of trace %s", msg.Header.Get(envelope.HeaderTraceparent), psc.TraceID())
	}
}
