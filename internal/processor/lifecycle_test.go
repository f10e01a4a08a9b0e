package processor

import (
	"context"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

func TestCancelStopsRunningJob(t *testing.T) {
	e := newEnv(t)
	r := e.start(baseConfig(t))
	j := newJob("alice", "video", envelope.PriorityNormal, map[string]any{"duration_ms": 60000, "steps": 600})
	e.submit(j)
	testutil.WaitFor(t, 10*time.Second, func() bool { return e.snapshot(j.ID).Progress > 0 })

	// What ingest's DELETE does: cancel in the KV, then tell the processors.
	ctx := context.Background()
	if _, err := e.cancelStored(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Publish("cancel."+j.User+"."+j.ID, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return counterValue(t, r, "beamline_processor_jobs_total", map[string]string{"outcome": "cancelled"}) == 1
	})
	testutil.WaitFor(t, 10*time.Second, func() bool {
		s, err := e.js.Stream(ctx, "JOBS")
		return err == nil && s.CachedInfo().State.Msgs == 0 // acked, not redelivered
	})
	if v := counterValue(t, r, "beamline_processor_inflight", nil); v != 0 {
		t.Fatalf("inflight %v after cancel", v)
	}
	if s := e.snapshot(j.ID); s.Status != envelope.StatusCancelled {
		t.Fatalf("status %s after cancel", s.Status)
	}
}

func TestCancelledJobIsNotStarted(t *testing.T) {
	e := newEnv(t)
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	if _, err := e.store.Create(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cancelStored(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	e.publish(j)
	r := e.start(baseConfig(t))
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return counterValue(t, r, "beamline_processor_jobs_total", map[string]string{"outcome": "cancelled"}) == 1
	})
	for _, ev := range e.events(j) {
		if ev.Status == envelope.StatusRunning {
			t.Fatalf("cancelled job was started: %+v", ev)
		}
	}
}

func TestGracefulShutdownHandsWaitingJobsOver(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.Concurrency = 2
	cfg.MaxPerUser = 1
	cfg.AckWait = time.Minute // a takeover within the test is not an ack_wait expiry
	a := e.start(cfg)
	jobs := e.submitAlice(4, map[string]any{"duration_ms": 1000})
	// One runs on a; the other three wait for alice's slot.
	first := e.waitOneRunning(a, jobs)
	if err := a.stop(t); err != nil { // returns after the running job finished
		t.Fatal(err)
	}
	if s := e.snapshot(first.ID); s.Status != envelope.StatusSucceeded || s.Attempt != 1 {
		t.Fatalf("in-flight job after graceful stop: %+v", s)
	}
	b := e.start(cfg)
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	_ = b
}
