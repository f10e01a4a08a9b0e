package processor

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// M1: a panic in a run that took over a user's slot (handed over by the
// user's finishing job) Naks that run's delivery and hands the slot on, so
// none of the user's jobs is stranded.
func TestPanicInHandedOverRunStrandsNothing(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.MaxPerUser = 1
	var runs atomic.Int64
	var panicked atomic.Value
	e.startWith(cfg, func(p *Processor) {
		p.hooks.beforeCall = func(d *delivery) {
			if runs.Add(1) == 2 { // the first job run with a handed-over slot
				panicked.Store(d.job.ID)
				panic("injected by the test")
			}
		}
	})
	var jobs []envelope.Job
	for i := range 3 {
		ms := 50
		if i == 0 {
			ms = 500 // the others are parked behind it
		}
		j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"duration_ms": ms})
		jobs = append(jobs, j)
		e.submit(j)
	}
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	id, _ := panicked.Load().(string)
	if id == "" {
		t.Fatal("the hook never panicked")
	}
	if s := e.snapshot(id); s.Attempt != 2 {
		t.Fatalf("job that panicked: %+v, want attempt 2", s)
	}
	e.waitJobsEmpty()
}

// Low: a cancel arriving between the started write and the provider call
// cancels the call (the run is findable before its started write).
func TestCancelRightAfterStartStopsTheCall(t *testing.T) {
	e := newEnv(t)
	g := newGate()
	var sawCancel atomic.Bool
	e.startWith(withProvider(baseConfig(t), g), func(p *Processor) {
		p.hooks.beforeCall = func(d *delivery) {
			// What ingest's DELETE does, at this precise point.
			ctx := context.Background()
			if _, err := e.cancelStored(ctx, d.job.ID); err != nil {
				return
			}
			if e.nc.Publish("cancel."+d.job.User+"."+d.job.ID, nil) != nil || e.nc.Flush() != nil {
				return
			}
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) && !d.cancelled.Load() {
				time.Sleep(5 * time.Millisecond)
			}
			sawCancel.Store(d.cancelled.Load())
		}
	})
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	e.waitJobsEmpty()
	// The call is either not made (its context is done already) or
	// cancelled; never run to its end.
	if !sawCancel.Load() || g.calls.Load() != g.cancelled.Load() {
		t.Fatalf("cancel notice seen by the run: %v; provider calls %d, cancelled %d",
			sawCancel.Load(), g.calls.Load(), g.cancelled.Load())
	}
	e.checkSeqs(j, envelope.StatusCancelled)
}

// bigResult is a provider whose result is a JSON string of size bytes.
type bigResult struct {
	size  int
	calls atomic.Int64
}

func (b *bigResult) Name() string { return "big" }

func (b *bigResult) Call(context.Context, provider.Request) (json.RawMessage, error) {
	b.calls.Add(1)
	return json.RawMessage(`"` + strings.Repeat("x", b.size-2) + `"`), nil
}

// M2: a result that cannot be stored ends the job failed at once, without
// a result, instead of rerunning it until dead.
func TestResultTooLargeFailsWithoutRerun(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxResult int
		size      int
	}{
		{"over MaxResult", 0, DefaultMaxResult + 1},
		{"final event over the envelope budget", envelope.MaxSize, envelope.MaxSize - 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			prov := &bigResult{size: tc.size}
			cfg := withProvider(baseConfig(t), prov)
			cfg.MaxResult = tc.maxResult
			e.start(cfg)
			j := newJob("alice", "image", envelope.PriorityNormal, nil)
			e.submit(j)
			var s envelope.Snapshot
			testutil.WaitFor(t, 20*time.Second, func() bool {
				s = e.snapshot(j.ID)
				return s.Status.Terminal()
			})
			if s.Status != envelope.StatusFailed || !strings.Contains(s.Error, "result too large") || len(s.Result) != 0 || s.Attempt != 1 {
				t.Fatalf("snapshot: status %s, error %q, %d bytes of result, attempt %d", s.Status, s.Error, len(s.Result), s.Attempt)
			}
			e.waitJobsEmpty()
			if n := prov.calls.Load(); n != 1 {
				t.Fatalf("provider called %d times, want 1", n)
			}
			e.checkSeqs(j, envelope.StatusFailed)
		})
	}
}
