package processor

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

func TestBreakerPausesPullingWhileProviderIsDown(t *testing.T) {
	var down atomic.Bool
	var hits atomic.Int64
	down.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	hp, err := provider.NewHTTP(provider.HTTPConfig{URL: srv.URL, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.Providers["http"] = hp
	cfg.Kinds = append(cfg.Kinds, config.Kind{Name: "remote", Provider: "http"})
	cfg.Concurrency = 4
	cfg.MaxDeliver = 50
	// Every call fails while it is down: at least half of at least 3 calls.
	// One probe at a time, so each probe spends at most one delivery.
	cfg.Breaker = flow.BreakerConfig{MinRequests: 3, MaxRequests: 1, OpenTimeout: 150 * time.Millisecond}
	r := e.start(cfg)

	const n = 20
	jobs := make([]envelope.Job, n)
	for i := range jobs {
		jobs[i] = newJob("u"+string(rune('a'+i%10)), "remote", envelope.PriorityNormal, nil)
		e.submit(jobs[i])
	}
	sumAttempts := func() int {
		sum := 0
		for _, j := range jobs {
			sum += e.snapshot(j.ID).Attempt
		}
		return sum
	}
	waitFor(t, 10*time.Second, func() bool {
		return counterValue(t, r, "beamline_breaker_state", map[string]string{"provider": "http"}) == 2
	})
	// While it stays down, each half-open probe may spend one delivery;
	// nothing else is pulled or called.
	h0 := hits.Load()
	waitFor(t, 10*time.Second, func() bool { return hits.Load() >= h0+3 })
	s1 := sumAttempts()
	h1 := hits.Load()
	waitFor(t, 10*time.Second, func() bool { return hits.Load() >= h1+4 })
	s2, h2 := sumAttempts(), hits.Load()
	if s2-s1 > int(h2-h1)+1 || s2-s1 > 8 {
		t.Fatalf("attempts climbed from %d to %d over %d probes while the breaker was open", s1, s2, h2-h1)
	}

	down.Store(false)
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	if total := sumAttempts(); total > n+int(hits.Load()) {
		t.Fatalf("total attempts %d for %d jobs", total, n)
	}
	if v := counterValue(t, r, "beamline_breaker_state", map[string]string{"provider": "http"}); v != 0 {
		t.Fatalf("breaker state %v after recovery", v)
	}
}

// With the default breaker, a healthy provider on which 30% of the jobs fail
// transiently (in runs: six failing jobs, then fourteen good ones) keeps its
// breaker closed, and every job completes promptly. Under the old rule
// (5 consecutive failures, 60s open) the first run opened it and stalled
// every kind the provider serves.
func TestBreakerIgnoresPerJobFailures(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.Breaker = flow.BreakerConfig{} // the defaults under test
	cfg.MaxPerUser = 8
	r := e.start(cfg)

	const n = 200
	jobs := make([]envelope.Job, n)
	failing := 0
	for i := range jobs {
		// Instant calls: failing and succeeding calls end in the order they
		// started, as on a provider whose failures cost as long as its
		// successes.
		sim := map[string]any{"duration_ms": 0}
		if i%20 < 6 {
			sim["fail_times"] = 1
			failing++
		}
		jobs[i] = newJob("u"+string(rune('a'+i%10)), "image", envelope.PriorityNormal, sim)
		e.submit(jobs[i])
	}
	opened := false
	deadline := time.Now().Add(40 * time.Second)
	for i := 0; i < n; {
		if counterValue(t, r, "beamline_breaker_state", map[string]string{"provider": "sim"}) != 0 {
			opened = true
		}
		if e.snapshot(jobs[i].ID).Status == envelope.StatusSucceeded {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs succeeded within 40s (breaker opened: %v)", i, n, opened)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if opened {
		t.Errorf("the breaker left the closed state with %d of %d jobs failing once", failing, n)
	}
	retried := 0
	for _, j := range jobs {
		if e.snapshot(j.ID).Attempt > 1 {
			retried++
		}
	}
	if retried != failing {
		t.Errorf("%d jobs retried, want %d", retried, failing)
	}
}
