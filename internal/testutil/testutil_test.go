package testutil

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWaitForHolds(t *testing.T) {
	var n atomic.Int32
	WaitFor(t, 5*time.Second, func() bool { return n.Add(1) >= 3 })
	if n.Load() != 3 {
		t.Errorf("cond asked %d times, want 3", n.Load())
	}
}

func TestFailureMessage(t *testing.T) {
	for _, tc := range []struct {
		msg  []any
		want string
	}{
		{nil, "condition not met within 1s"},
		{[]any{"job", 7, "never ran"}, "condition not met within 1s: job 7 never ran"},
		{[]any{func() string { return "status queued" }}, "condition not met within 1s: status queued"},
	} {
		if got := failure(time.Second, tc.msg); got != tc.want {
			t.Errorf("failure(%v) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}

// fakeTB records a failure instead of stopping the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.failed = args[0].(string)
	panic(f)
}

func TestWaitForTimesOut(t *testing.T) {
	f := &fakeTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				panic(r)
			}
		}()
		WaitFor(f, 30*time.Millisecond, func() bool { return false }, "never")
	}()
	if f.failed != "condition not met within 30ms: never" {
		t.Errorf("failed with %q", f.failed)
	}
}

func TestMetricValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total"}, []string{"kind", "code"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	reg.MustRegister(c, h, g)
	c.WithLabelValues("image", "202").Add(2)
	c.WithLabelValues("video", "202").Add(3)
	c.WithLabelValues("video", "429").Inc()
	h.Observe(1)
	h.Observe(2)
	g.Set(7)
	for _, tc := range []struct {
		name string
		want map[string]string
		v    float64
	}{
		{"c_total", nil, 6},
		{"c_total", map[string]string{"code": "202"}, 5},
		{"c_total", map[string]string{"kind": "video", "code": "429"}, 1},
		{"h_seconds", nil, 2},
		{"g", nil, 7},
	} {
		if v := GatheredValue(t, reg, tc.name, tc.want); v != tc.v {
			t.Errorf("%s %v = %v, want %v", tc.name, tc.want, v, tc.v)
		}
	}
	mfs, _ := reg.Gather()
	if _, found := MetricValue(mfs, "c_total", map[string]string{"kind": "audio"}); found {
		t.Error("found a series of kind audio")
	}
	if _, found := MetricValue(mfs, "missing", nil); found {
		t.Error("found a missing family")
	}
}

func TestBufferConcurrentWrites(t *testing.T) {
	var b Buffer
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 100 {
				_, _ = b.Write([]byte("x"))
			}
		}()
	}
	for range 4 {
		<-done
	}
	if got := len(b.String()); got != 400 {
		t.Errorf("wrote %d bytes, want 400", got)
	}
}
