package processor

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// A provider down for many half-open windows costs the jobs no attempt that
// did not call it: a run is admitted by the breaker before its attempt is
// counted, so while the breaker refuses, workers wait without writing
// running (immediate start, every redelivery) or an outcome (deferred
// start). At any moment the attempts stored across all jobs are at most the
// provider's hits plus the runs that may have counted theirs and not yet
// called (Concurrency). No job dies of the outage; all succeed after it.
func TestBreakerPausesPullingWhileProviderIsDown(t *testing.T) {
	for _, tc := range []struct {
		name         string
		startedDelay time.Duration
	}{
		{"immediate start", -1},
		{"deferred start", 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) { testBreakerOutage(t, tc.startedDelay) })
	}
}

func testBreakerOutage(t *testing.T, startedDelay time.Duration) {
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
	const concurrency = 4
	cfg.Concurrency = concurrency
	cfg.MaxDeliver = 10
	cfg.StartedDelay = startedDelay
	// Every call fails while it is down: at least half of at least 3 calls.
	// One probe per half-open window.
	cfg.Breaker = flow.BreakerConfig{MinRequests: 3, MaxRequests: 1, OpenTimeout: 100 * time.Millisecond}
	r := e.start(cfg)

	const n = 20
	jobs := make([]envelope.Job, n)
	for i := range jobs {
		jobs[i] = newJob("u"+string(rune('a'+i%10)), "remote", envelope.PriorityNormal, nil)
		e.submit(jobs[i])
	}
	// check reads the attempts before the hits: a run counts its attempt
	// (at most) before its call, never after, so the bound holds whenever
	// it is read. slack is how many runs may have counted and not yet
	// called: any of the Concurrency runs until the breaker opened, then
	// only the admitted probe (MaxRequests). Refused runs that counted
	// their attempt and waited for the breaker would show here as up to
	// Concurrency attempts ahead of the hits, window after window.
	var lastAttempts int
	var lastHits int64
	check := func(slack int) {
		t.Helper()
		sum := 0
		for _, j := range jobs {
			s := e.snapshot(j.ID)
			if s.Status == envelope.StatusDead {
				t.Fatalf("job %s dead (attempt %d) during the outage", j.ID, s.Attempt)
			}
			sum += s.Attempt
		}
		h := hits.Load()
		if sum > int(h)+slack {
			t.Fatalf("%d attempts counted for %d provider calls (allowed ahead: %d): attempts without a call", sum, h, slack)
		}
		lastAttempts, lastHits = sum, h
	}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		check(concurrency)
		return counterValue(t, r, "beamline_breaker_state", map[string]string{"provider": "http"}) == 2
	})
	// The runs admitted before it opened call at once (no wait): they are
	// done once Concurrency more calls (probes, 100ms apart) were made.
	h0 := hits.Load()
	testutil.WaitFor(t, 10*time.Second, func() bool {
		check(concurrency)
		return hits.Load() >= h0+concurrency
	})
	// Down for at least 10 more half-open windows, one probe (hit) each.
	h1 := hits.Load()
	testutil.WaitFor(t, 20*time.Second, func() bool {
		check(int(cfg.Breaker.MaxRequests))
		return hits.Load() >= h1+10
	}, func() string { return fmt.Sprintf("%d probes in 20s", hits.Load()-h1) })
	check(int(cfg.Breaker.MaxRequests))
	t.Logf("outage: %d attempts, %d provider hits (%d since open)", lastAttempts, lastHits, lastHits-h0)

	down.Store(false)
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	total := 0
	for _, j := range jobs {
		total += e.snapshot(j.ID).Attempt
	}
	if h := hits.Load(); total > int(h) {
		t.Fatalf("total attempts %d for %d provider calls", total, h)
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
