package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/cogfake"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// countedCog is a Cog fake behind a server that counts the PUTs it gets.
type countedCog struct {
	fake *cogfake.Server
	url  string
	puts atomic.Int64
}

func newCountedCog(t *testing.T) *countedCog {
	t.Helper()
	c := &countedCog{fake: cogfake.New(cogfake.Config{
		Slots: 4,
		Predict: func(context.Context, *cogfake.Run) (json.RawMessage, error) {
			return json.RawMessage(`"ok"`), nil
		},
	})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			c.puts.Add(1)
		}
		c.fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(c.fake.Close)
	c.url = srv.URL
	return c
}

// readyz answers the processor's GET /readyz: its status and body.
func readyz(t *testing.T, r *running) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	r.p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// TestCogHealthFeedsReadinessAndRotation: a DEFUNCT Cog server gets no
// prediction while another is READY; once every server is DEFUNCT the
// processor is not ready (503, the servers' statuses as the reason) and a
// job waits without using up an attempt, then runs when a server is back.
// (Before, nothing asked /health-check: /readyz said ready, the DEFUNCT
// server was sent PUTs, and with both down jobs burnt their attempts.)
func TestCogHealthFeedsReadinessAndRotation(t *testing.T) {
	e := newEnv(t)
	a, b := newCountedCog(t), newCountedCog(t)
	a.fake.SetHealth(cogfake.StatusDefunct)
	prov, err := provider.NewCog(provider.CogConfig{URLs: []string{a.url, b.url},
		BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := withProvider(baseConfig(t), prov)
	cfg.HealthInterval = 20 * time.Millisecond
	cfg.MaxDeliver = 2
	r := e.start(cfg)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return counterValue(t, r, "beamline_provider_healthy", map[string]string{"provider": "cog"}) == 1
	}, func() string { return "no health check" })
	if code, body := readyz(t, r); code != http.StatusOK {
		t.Fatalf("readyz %d %s with one server READY, want 200", code, body)
	}
	for i := range 4 {
		j := newJob("alice", "image", envelope.PriorityNormal, nil)
		e.submit(j)
		e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
		if n := a.puts.Load(); n != 0 {
			t.Fatalf("job %d: the DEFUNCT server got %d PUTs, want none", i, n)
		}
	}

	b.fake.SetHealth(cogfake.StatusDefunct)
	testutil.WaitFor(t, 10*time.Second, func() bool { code, _ := readyz(t, r); return code == http.StatusServiceUnavailable },
		func() string {
			code, body := readyz(t, r)
			return fmt.Sprintf("readyz %d %s with every server DEFUNCT, want 503", code, body)
		})
	if _, body := readyz(t, r); !strings.Contains(body, "DEFUNCT") || !strings.Contains(body, b.url) {
		t.Fatalf("readyz reason %s, want the servers' DEFUNCT status", body)
	}
	putsA, putsB := a.puts.Load(), b.puts.Load()
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	// Ten more failed checks, then let a server come back.
	failed := func() float64 {
		return counterValue(t, r, "beamline_provider_health_checks_total", map[string]string{"provider": "cog", "result": "failed"})
	}
	from := failed()
	testutil.WaitFor(t, 10*time.Second, func() bool { return failed() >= from+10 },
		func() string { return "the health checks stopped" })
	if s := e.snapshot(j.ID); s.Attempt != 0 {
		t.Fatalf("job run while every server was DEFUNCT: %+v", s)
	}
	if a.puts.Load() != putsA || b.puts.Load() != putsB {
		t.Fatal("PUTs sent while every server was DEFUNCT")
	}
	b.fake.SetHealth(cogfake.StatusReady)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	if s.Attempt != 1 {
		t.Fatalf("job ended at attempt %d, want 1: waiting for a healthy server costs no attempt", s.Attempt)
	}
	if code, body := readyz(t, r); code != http.StatusOK {
		t.Fatalf("readyz %d %s with a server READY again, want 200", code, body)
	}
}
