package processor

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// The heartbeat loop and every worker are children of the processor's
// supervision tree: one that crashes is restarted by its supervisor, the
// restart is counted in beamline_supervisor_restarts_total, and jobs go on
// being run (and heartbeated) as before.
func TestCrashedChildrenAreRestartedAndCounted(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	var heartbeatStarts, picks atomic.Int64
	r := e.startWith(cfg, func(p *Processor) {
		p.hooks.heartbeatsStarted = func() {
			if heartbeatStarts.Add(1) == 1 {
				panic("heartbeats crash, injected by the test")
			}
		}
		p.hooks.beforePick = func() {
			if picks.Add(1) == 1 { // the first pick of the first worker, holding nothing
				panic("worker crash, injected by the test")
			}
		}
	})
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return counterValue(t, r, "beamline_supervisor_restarts_total", map[string]string{"supervisor": "processor", "child": "heartbeats"}) == 1 &&
			counterValue(t, r, "beamline_supervisor_restarts_total", map[string]string{"supervisor": "workers"}) == 1 &&
			heartbeatStarts.Load() == 2 // restarted after its backoff
	})
	if v := counterValue(t, r, "beamline_supervisor_events_total", map[string]string{"supervisor": "workers", "event": "child_panicked"}); v != 1 {
		t.Fatalf("worker panics counted %v, want 1", v)
	}
	// Every worker still runs jobs: more jobs than workers, all succeed.
	var jobs []envelope.Job
	for range 2 * cfg.Concurrency {
		j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"duration_ms": 20})
		jobs = append(jobs, j)
		e.submit(j)
	}
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	e.waitJobsEmpty()
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}
