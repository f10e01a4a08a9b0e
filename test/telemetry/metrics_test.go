package telemetry_test

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// Every binary's /metrics parses, holds the series issue 6 names, and the
// job series move when jobs succeed, retry and fail.
func TestMetricsScrapeAndMove(t *testing.T) {
	st := start(t, nil)

	// The named series, per binary.
	want := map[string][]string{
		st.IngestURL: {"beamline_ingest_requests_total", "beamline_ingest_request_duration_seconds"},
		st.ProcessorURL: {"beamline_breaker_state", "beamline_processor_inflight", "beamline_dlq_messages",
			"beamline_consumer_pending", "beamline_consumer_ack_pending"},
		st.NotifierURL: {"beamline_notifier_connections"},
	}
	c := dial(t, st, st.Token) // a connection, a join and pushes to count
	if s, _ := c.join("user:dev"); s != "ok" {
		t.Fatalf("join user:dev: %s", s)
	}

	before := scrape(t, st.ProcessorURL)
	ok := submit(t, st, `{"kind":"image","priority":"high","input":{"sim":{"steps":2}}}`, nil)
	flaky := submit(t, st, `{"kind":"image","input":{"sim":{"fail_times":1}}}`, nil)
	bad := submit(t, st, `{"kind":"video","priority":"low","input":{"sim":{"fail":"terminal"}}}`, nil)
	for id, status := range map[string]envelope.Status{ok.ID: envelope.StatusSucceeded, flaky.ID: envelope.StatusSucceeded, bad.ID: envelope.StatusFailed} {
		if s := waitTerminal(t, st, id); s.Status != status {
			t.Fatalf("job %s ended %s (%s), want %s", id, s.Status, s.Error, status)
		}
	}

	for base, names := range want {
		var mfs map[string]*dto.MetricFamily
		deadline := time.Now().Add(10 * time.Second)
		for { // consumer figures come from consumer info, refreshed periodically
			mfs = scrape(t, base)
			missing := ""
			for _, n := range names {
				if _, ok := mfs[n]; !ok {
					missing = n
				}
			}
			if missing == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s/metrics lacks %s", base, missing)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for n, mf := range mfs {
			if mf.GetType() == dto.MetricType_COUNTER && len(n) > 6 && n[len(n)-6:] != "_total" {
				t.Errorf("%s: counter %s does not end in _total", base, n)
			}
		}
	}

	in := scrape(t, st.IngestURL)
	if v, _ := value(in, "beamline_ingest_requests_total", map[string]string{"route": "submit", "code": "202"}); v != 3 {
		t.Errorf("ingest submit 202s = %v, want 3", v)
	}
	if v, _ := value(in, "beamline_ingest_request_duration_seconds", map[string]string{"route": "submit"}); v < 3 {
		t.Errorf("ingest submit latency samples = %v, want ≥ 3", v)
	}
	if v, _ := value(in, "beamline_ingest_jobs_submitted_total", map[string]string{"kind": "image", "priority": "high"}); v != 1 {
		t.Errorf("ingest jobs submitted image/high = %v, want 1", v)
	}

	after := scrape(t, st.ProcessorURL)
	moved := func(name string, labels map[string]string, by float64) {
		t.Helper()
		b, _ := value(before, name, labels)
		a, _ := value(after, name, labels)
		if a-b < by {
			t.Errorf("%s%v moved %v → %v, want +%v", name, labels, b, a, by)
		}
	}
	moved("beamline_processor_jobs_total", map[string]string{"kind": "image", "priority": "high", "outcome": "succeeded"}, 1)
	moved("beamline_processor_jobs_total", map[string]string{"kind": "image", "priority": "normal", "outcome": "retried"}, 1)
	moved("beamline_processor_jobs_total", map[string]string{"kind": "image", "priority": "normal", "outcome": "succeeded"}, 1)
	moved("beamline_processor_jobs_total", map[string]string{"kind": "video", "priority": "low", "outcome": "failed"}, 1)
	moved("beamline_provider_calls_total", map[string]string{"provider": "sim", "outcome": "ok"}, 2)
	moved("beamline_provider_calls_total", map[string]string{"provider": "sim", "outcome": "retryable"}, 1)
	moved("beamline_provider_calls_total", map[string]string{"provider": "sim", "outcome": "terminal"}, 1)
	moved("beamline_processor_job_duration_seconds", map[string]string{"kind": "image"}, 3)
	moved("beamline_processor_queue_wait_seconds", nil, 3)
	moved("beamline_processor_attempts", nil, 3)
	if v, _ := value(after, "beamline_breaker_state", map[string]string{"provider": "sim"}); v != 0 {
		t.Errorf("breaker state %v, want 0 (closed)", v)
	}

	// The notifier counted the connection, the join and pushed frames
	// (pushes and push latency are recorded after the write).
	testutil.WaitFor(t, 10*time.Second, func() bool {
		n := scrape(t, st.NotifierURL)
		conns, _ := value(n, "beamline_notifier_connections", nil)
		joins, _ := value(n, "beamline_notifier_joins_total", nil)
		pushes, _ := value(n, "beamline_notifier_pushes_total", nil)
		lat, _ := value(n, "beamline_notifier_push_latency_seconds", nil)
		return conns >= 1 && joins >= 1 && pushes >= 6 && lat >= 6
	})
	c.c.Abort()
	testutil.WaitFor(t, 10*time.Second, func() bool {
		n := scrape(t, st.NotifierURL)
		d, _ := value(n, "beamline_notifier_disconnects_total", nil)
		conns, _ := value(n, "beamline_notifier_connections", nil)
		return d >= 1 && conns == 0
	})
}
