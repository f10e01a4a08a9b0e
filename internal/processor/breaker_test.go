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
	cfg.Breaker = flow.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 150 * time.Millisecond}
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
