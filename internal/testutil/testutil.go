// Package testutil holds the small helpers every package's tests share.
// Tests wait by polling with a deadline, never by sleeping a fixed time.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// PollInterval is how often WaitFor asks its condition again.
const PollInterval = 10 * time.Millisecond

// WaitFor polls cond until it holds, and fails t (t.Fatal) when it still
// does not after timeout. msg says what was awaited: each element is
// printed as fmt.Sprint does, except a func() string, which is called only
// on failure (to describe the state at that moment).
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, msg ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(failure(timeout, msg))
		}
		time.Sleep(PollInterval)
	}
}

func failure(timeout time.Duration, msg []any) string {
	s := fmt.Sprintf("condition not met within %v", timeout)
	if len(msg) == 0 {
		return s
	}
	parts := make([]string, len(msg))
	for i, m := range msg {
		if f, ok := m.(func() string); ok {
			parts[i] = f()
		} else {
			parts[i] = fmt.Sprint(m)
		}
	}
	return s + ": " + strings.Join(parts, " ")
}

// MetricValue sums the series of family name in mfs whose labels include
// want: counters, gauges and untyped metrics by value, histograms by their
// sample count. found says whether any series matched.
func MetricValue(mfs []*dto.MetricFamily, name string, want map[string]string) (sum float64, found bool) {
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue series
				}
			}
			found = true
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			case m.Untyped != nil:
				sum += m.Untyped.GetValue()
			}
		}
	}
	return sum, found
}

// GatheredValue gathers g (failing t when it cannot) and returns the
// MetricValue of name for want.
func GatheredValue(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	v, _ := MetricValue(mfs, name, want)
	return v
}

// Buffer is a bytes.Buffer that several goroutines may write to at once:
// a log sink for a service under test.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Tracing is a tracer provider that records every ended span in the
// returned exporter (synchronously: a span is there once it ended); it is
// shut down when the test ends.
func Tracing(t testing.TB) (*tracetest.InMemoryExporter, *sdktrace.TracerProvider) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return exp, tp
}

// Do sends req with c and returns the answer with its whole body read (and
// closed); it fails t when no answer comes or the body cannot be read.
func Do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL.Path, err)
	}
	return resp, b
}
