package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestTracingEnabledFromEnv(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
		err  bool
	}{
		{env: map[string]string{}, want: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, want: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, want: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, want: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, want: false},
		{env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, want: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: true},
	} {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"} {
			t.Setenv(k, tc.env[k])
		}
		got, err := TracingEnabled()
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%v: got %v, %v; want %v (error %v)", tc.env, got, err, tc.want, tc.err)
		}
		if tc.err && !errors.Is(err, ErrTracingConfig) {
			t.Errorf("%v: error %v does not wrap ErrTracingConfig", tc.env, err)
		}
	}
}

func TestNewTracerProviderOffIsNoop(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	tp, shutdown, err := NewTracerProvider(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	_, span := tp.Tracer("x").Start(context.Background(), "s")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Fatal("tracing off must give non-recording, invalid spans")
	}
	// A remote parent still travels with the no-op provider.
	ctx := ContextWithTraceparent(context.Background(), tp1)
	ctx, span = Tracer(tp).Start(ctx, "child")
	span.End()
	if got := Traceparent(ctx); got != tp1 {
		t.Fatalf("Traceparent = %q, want %q", got, tp1)
	}
}

func TestNewTracerProviderOn(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	tp, shutdown, err := NewTracerProvider(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tp.(*sdktrace.TracerProvider); !ok {
		t.Fatalf("provider %T, want the SDK's", tp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = shutdown(ctx) // nothing was recorded: nothing to send
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	if _, _, err := NewTracerProvider(context.Background(), "test"); !errors.Is(err, ErrTracingConfig) {
		t.Fatalf("grpc protocol: err %v", err)
	}
}

func TestNATSHeaderPropagation(t *testing.T) {
	exp, tp := testutil.Tracing(t)

	ctx, span := Tracer(tp).Start(context.Background(), "publish")
	h := nats.Header{}
	Inject(ctx, h)
	span.End()
	if got := h.Get("traceparent"); got == "" || got != Traceparent(ctx) {
		t.Fatalf("header traceparent %q, Traceparent %q", got, Traceparent(ctx))
	}
	rctx := Extract(context.Background(), h)
	_, child := Tracer(tp).Start(rctx, "consume")
	child.End()
	if child.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Fatal("extracted context lost the trace id")
	}
	spans := exp.GetSpans()
	if len(spans) != 2 || spans[1].Parent.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("spans %+v: consume must be the child of publish", spans)
	}
	if Extract(context.Background(), nil) == nil || Traceparent(context.Background()) != "" {
		t.Fatal("no span context must give no traceparent")
	}
	if SpanContextOf("00-bad").IsValid() || !SpanContextOf(tp1).IsValid() {
		t.Fatal("SpanContextOf validation")
	}
}

func TestLogAttrsAndHandler(t *testing.T) {
	if LogAttrs(context.Background()) != nil {
		t.Fatal("no span: no attrs")
	}
	ctx := ContextWithTraceparent(context.Background(), tp1)
	var buf bytes.Buffer
	log, err := NewLogger("json", &buf, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	log.With("job", "j1").InfoContext(ctx, "handled")
	log.Info("no trace")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || rec["span_id"] != "00f067aa0ba902b7" || rec["job"] != "j1" {
		t.Fatalf("record %v lacks trace attributes", rec)
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Fatalf("record without a span got a trace id: %s", lines[1])
	}
	attrs := LogAttrs(ctx)
	if len(attrs) != 2 || attrs[0].(slog.Attr).Value.String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("LogAttrs = %v", attrs)
	}
	if _, err := NewLogger("xml", &buf, slog.LevelInfo); err == nil {
		t.Fatal("unknown format accepted")
	}
}

type recorder struct {
	mu  sync.Mutex
	got []AdminMetrics
}

func (r *recorder) Broadcast(topic, event string, payload any) error {
	if topic != AdminTopic || event != AdminEvent {
		return errors.New("wrong topic")
	}
	r.mu.Lock()
	r.got = append(r.got, payload.(AdminMetrics))
	r.mu.Unlock()
	return nil
}

// since returns the broadcasts from the n-th on, and how many there are.
func (r *recorder) since(n int) ([]AdminMetrics, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]AdminMetrics(nil), r.got[min(n, len(r.got)):]...), len(r.got)
}

func (r *recorder) last() (AdminMetrics, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return AdminMetrics{}, false
	}
	return r.got[len(r.got)-1], true
}

func TestPublisherAndAggregator(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)

	reg := prometheus.NewRegistry()
	jobs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: FamilyJobs, Help: "h"}, []string{"kind", "priority", "outcome"})
	pending := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: FamilyConsumerPending, Help: "h"}, []string{"consumer"})
	breaker := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: FamilyBreakerState, Help: "h"}, []string{"provider"})
	inflight := prometheus.NewGauge(prometheus.GaugeOpts{Name: FamilyInflight, Help: "h"})
	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "beamline_unrelated", Help: "h"})
	reg.MustRegister(jobs, pending, breaker, inflight, other)
	pending.WithLabelValues("proc-high-image").Set(3)
	pending.WithLabelValues("proc-high-video").Set(2)
	pending.WithLabelValues("proc-low-image").Set(1)
	breaker.WithLabelValues("sim").Set(2)
	inflight.Set(4)

	if _, err := NewPublisher(nc, PublisherConfig{Service: "a.b", Gatherer: reg}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad service token: %v", err)
	}
	pub, err := NewPublisher(nc, PublisherConfig{Service: "processor", Gatherer: reg, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sample, err := pub.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sample.Families["beamline_unrelated"]; ok {
		t.Fatal("unselected family published")
	}
	rec := &recorder{}
	agg, err := NewAggregator(nc, rec, AggregatorConfig{Interval: 20 * time.Millisecond, Expire: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = agg.Run(ctx) })
	pctx, stopPub := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Go(func() { _ = pub.Run(pctx) })
	defer func() { cancel(); stopPub(); wg.Wait(); pwg.Wait() }()

	testutil.WaitFor(t, 5*time.Second, func() bool {
		m, ok := rec.last()
		return ok && m.QueueDepth.High == 5 && m.QueueDepth.Low == 1 && m.Inflight == 4 && m.Breakers["sim"] == "open"
	})
	// The rate is the change between two consecutive samples of the
	// instance, so a single jump shows only until the next sample: when two
	// samples land between two broadcasts (a busy machine), it is never
	// broadcast. Jobs keep succeeding here, as they do in a running
	// pipeline, and every broadcast since the first is looked at.
	_, from := rec.since(0)
	testutil.WaitFor(t, 5*time.Second, func() bool {
		jobs.WithLabelValues("image", "high", "succeeded").Add(10)
		got, _ := rec.since(from)
		for _, m := range got {
			if m.JobsPerSecond.Succeeded > 0 {
				return true
			}
		}
		return false
	})
	// An instance that falls silent expires.
	stopPub()
	pwg.Wait()
	testutil.WaitFor(t, 5*time.Second, func() bool {
		m, _ := rec.last()
		return m.Inflight == 0 && m.QueueDepth.High == 0 && len(m.Breakers) == 0
	})
	m, _ := rec.last()
	if _, err := time.Parse(time.RFC3339, m.At); err != nil {
		t.Fatalf("at %q: %v", m.At, err)
	}
}

func TestAdminPayloadShape(t *testing.T) {
	b, err := json.Marshal(AdminMetrics{Breakers: map[string]string{"sim": "closed"}})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"at", "queue_depth", "inflight", "jobs_per_second", "breakers", "supervisor_restarts", "dlq", "notifier_connections"} {
		if _, ok := m[k]; !ok {
			t.Errorf("payload lacks %q: %s", k, b)
		}
	}
	for _, k := range []string{"high", "normal", "low"} {
		if _, ok := m["queue_depth"].(map[string]any)[k]; !ok {
			t.Errorf("queue_depth lacks %q", k)
		}
	}
	for _, k := range []string{"succeeded", "failed", "retried", "dead"} {
		if _, ok := m["jobs_per_second"].(map[string]any)[k]; !ok {
			t.Errorf("jobs_per_second lacks %q", k)
		}
	}
}

// The W3C rules ingest used to check by hand, now the propagator's.
func TestTraceparentValidation(t *testing.T) {
	for tp, want := range map[string]bool{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":      true,
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what": true,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x":    false,
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":      false,
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01":      false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01":      false,
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01":      false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7":         false,
		"": false,
	} {
		if got := SpanContextOf(tp).IsValid(); got != want {
			t.Errorf("SpanContextOf(%q).IsValid() = %v", tp, got)
		}
	}
}

// TestTraceIDOf: the trace id of a valid traceparent; "" for anything the
// W3C format refuses (the timeline then shows no trace rather than junk).
func TestTraceIDOf(t *testing.T) {
	for tp, want := range map[string]string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":   "4bf92f3577b34da6a3ce929d0e0e4736",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x": "4bf92f3577b34da6a3ce929d0e0e4736",
		"": "",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01":  "",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01":  "",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":  "",
		"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01":  "",
		"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01":   "",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x": "",
	} {
		if got := TraceIDOf(tp); got != want {
			t.Errorf("TraceIDOf(%q) = %q, want %q", tp, got, want)
		}
	}
}

// TestDeferAttrs: a logger on DeferAttrs writes what one on the handler
// itself writes, through With chains, groups and levels.
func TestDeferAttrs(t *testing.T) {
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	for _, kind := range []string{"text", "json", "tint"} {
		var want, got bytes.Buffer
		mk := func(w *bytes.Buffer) slog.Handler {
			switch kind {
			case "json":
				return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: noTime})
			case "tint":
				return tint.NewHandler(w, &tint.Options{Level: slog.LevelInfo, NoColor: true, ReplaceAttr: noTime})
			}
			return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: noTime})
		}
		for _, l := range []*slog.Logger{slog.New(mk(&want)), slog.New(DeferAttrs(mk(&got)))} {
			job := l.With("job", "j1", "user", "alice").With(slog.Int("attempt", 2))
			job.Debug("not written")
			job.Info("job will be retried", "err", "boom")
			job.Info("again", "n", 1)
			job.WithGroup("call").With("provider", "sim").Warn("slow", "ms", 1200)
			l.Info("plain")
			l.With().Error("no attrs")
		}
		if got.String() != want.String() {
			t.Errorf("%s: DeferAttrs wrote\n%s\nthe handler itself\n%s", kind, got.String(), want.String())
		}
		if !strings.Contains(want.String(), "j1") || strings.Contains(want.String(), "not written") {
			t.Fatalf("%s: unexpected output %s", kind, want.String())
		}
	}
}

// BenchmarkJobLogger is the processor's logger per job (worker.go): With
// the job's attributes, then nothing logged (a job that succeeds).
func BenchmarkJobLogger(b *testing.B) {
	base := tint.NewHandler(io.Discard, &tint.Options{NoColor: true})
	for _, c := range []struct {
		name string
		h    slog.Handler
	}{{"tint", base}, {"deferred", DeferAttrs(base)}} {
		b.Run(c.name, func(b *testing.B) {
			l := slog.New(c.h).With("component", "processor")
			b.ReportAllocs()
			for b.Loop() {
				job := l.With("job", "01JBEAMLINEJOBID00000000", "user", "alice", "kind", "image").With("attempt", 1)
				_ = job
			}
		})
	}
}
