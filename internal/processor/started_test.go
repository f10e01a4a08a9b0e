package processor

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// startedConfig defers the started write by delay.
func startedConfig(t *testing.T, delay time.Duration) Config {
	cfg := baseConfig(t)
	cfg.StartedDelay = delay
	return cfg
}

// A job done within StartedDelay goes from its claim (running, seq 0, no
// event) straight to succeeded: one event (seq 1), carrying attempt 1.
func TestFastJobSkipsStarted(t *testing.T) {
	e := newEnv(t)
	e.start(startedConfig(t, 10*time.Second))
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusSucceeded, 15*time.Second)
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusSucceeded)
	if len(evs) != 1 || evs[0].Attempt != 1 || evs[0].Progress != 100 {
		t.Fatalf("events %+v, want only succeeded seq 1 attempt 1", evs)
	}
}

// The same for a job published straight to its subject (no queued
// snapshot): the processor creates it and writes the outcome at the
// revision the create returned.
func TestFastPublishedJobSkipsStarted(t *testing.T) {
	e := newEnv(t)
	e.start(startedConfig(t, 10*time.Second))
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.publish(j)
	e.waitStatus(j.ID, envelope.StatusSucceeded, 15*time.Second)
	e.waitJobsEmpty()
	if evs := e.checkSeqs(j, envelope.StatusSucceeded); len(evs) != 1 || evs[0].Attempt != 1 {
		t.Fatalf("events %+v, want only succeeded seq 1 attempt 1", evs)
	}
}

// A job that takes longer than StartedDelay is announced started while it
// runs, then succeeded.
func TestSlowJobIsStarted(t *testing.T) {
	e := newEnv(t)
	e.start(startedConfig(t, 10*time.Millisecond))
	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"duration_ms": 400})
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusRunning, 10*time.Second)
	e.waitStatus(j.ID, envelope.StatusSucceeded, 15*time.Second)
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusSucceeded)
	if len(evs) != 2 || evs[0].Status != envelope.StatusRunning || evs[0].Attempt != 1 || evs[1].Attempt != 1 {
		t.Fatalf("events %+v, want started then succeeded, attempt 1", evs)
	}
}

// Progress is a change of a running job: a progress report inside the
// window writes the start first, so the events stay started, progress…,
// succeeded without gaps.
func TestProgressInsideWindowWritesStartFirst(t *testing.T) {
	e := newEnv(t)
	e.start(startedConfig(t, 10*time.Second))
	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"duration_ms": 60, "steps": 3})
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusSucceeded, 15*time.Second)
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusSucceeded)
	if len(evs) < 3 || evs[0].Status != envelope.StatusRunning || evs[0].Progress != 0 || evs[1].Progress == 0 {
		t.Fatalf("events %+v, want started, progress…, succeeded", evs)
	}
}

// A run that dies inside the window (here: a panic before the call; a
// kill -9 looks the same from outside) leaves its claim stored: running,
// attempt 1, seq 0, no event. Its redelivery counts it, so a job that
// always dies ends dead after MaxDeliver runs, and no start is written
// after the dead run's delivery was let go of. (Before the claim, the first
// run inside the window went uncounted: MaxDeliver + 1 runs.)
func TestCrashInsideWindowStillEndsDead(t *testing.T) {
	e := newEnv(t)
	cfg := startedConfig(t, 10*time.Second)
	cfg.MaxDeliver = 2
	var runs atomic.Int64
	e.startWith(cfg, func(p *Processor) {
		p.hooks.beforeCall = func(d *delivery) {
			runs.Add(1)
			panic("poison job")
		}
	})
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusDead, 20*time.Second)
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusDead)
	// delivery 1: claimed, attempt 1 (no event); 2: running attempt 2;
	// 3: attempts used up → dead.
	if n := runs.Load(); n != 2 {
		t.Fatalf("%d runs, want 2 (MaxDeliver 2)", n)
	}
	if len(evs) != 2 || evs[0].Status != envelope.StatusRunning || evs[0].Attempt != 2 || evs[1].Status != envelope.StatusDead {
		t.Fatalf("events %+v, want running 2, dead", evs)
	}
}

// The claim makes a job visibly running before its provider is called,
// without an event (it takes no seq); a cancel then is a cancel of a
// running job: the run is stopped and its attempt counted.
func TestClaimedJobIsVisiblyRunning(t *testing.T) {
	e := newEnv(t)
	g, j := e.callGatedClaimed()
	if s := e.snapshot(j.ID); s.Status != envelope.StatusRunning || s.Seq != 0 || s.Attempt != 1 {
		t.Fatalf("snapshot during the call %+v, want running seq 0 attempt 1", s)
	}
	if evs := e.events(j); len(evs) != 0 {
		t.Fatalf("events %+v, want none before the outcome", evs)
	}
	s, err := e.cancelStored(t.Context(), j.ID)
	if err != nil || s.Seq != 1 || s.Attempt != 1 {
		t.Fatalf("cancel: %+v, %v; want cancelled seq 1 attempt 1", s, err)
	}
	if err := e.nc.Publish("cancel."+j.User+"."+j.ID, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return g.cancelled.Load() == 1 })
	e.waitJobsEmpty()
	if evs := e.checkSeqs(j, envelope.StatusCancelled); len(evs) != 1 || evs[0].Attempt != 1 {
		t.Fatalf("events %+v, want cancelled attempt 1 only", evs)
	}
}

// A cancel inside the window: the outcome's compare-and-set finds the
// job cancelled; the job ends cancelled, with no started or succeeded event.
func TestCancelInsideWindow(t *testing.T) {
	e := newEnv(t)
	g, j := e.callGatedClaimed()
	if _, err := e.cancelStored(t.Context(), j.ID); err != nil {
		t.Fatal(err)
	}
	g.release()
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusCancelled)
	if len(evs) != 1 {
		t.Fatalf("events %+v, want only cancelled", evs)
	}
}

// callGatedClaimed starts the processor with a start delay longer than
// any test and a gate provider, submits a job of alice's and returns once
// the provider was called: the job is claimed, its start not yet stored.
func (e *env) callGatedClaimed() (*gate, envelope.Job) {
	e.t.Helper()
	g := newGate()
	e.start(withProvider(startedConfig(e.t, 10*time.Second), g))
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	testutil.WaitFor(e.t, 10*time.Second, func() bool { return g.calls.Load() == 1 })
	return g, j
}
