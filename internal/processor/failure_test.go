package processor

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

func TestThousandJobsWithRandomFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 jobs: skipped with -short")
	}
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.Concurrency = 32
	cfg.BackoffMin, cfg.BackoffMax = 5*time.Millisecond, 50*time.Millisecond
	r := e.start(cfg)
	const n = 1000
	jobs := make([]envelope.Job, n)
	fails := make([]int, n)
	for i := range jobs {
		fails[i] = rand.IntN(4)
		prio := envelope.Priorities[i%3]
		jobs[i] = newJob("u"+string(rune('a'+i%26)), []string{"image", "video"}[i%2], prio, map[string]any{"fail_times": fails[i]})
		e.submit(jobs[i])
	}
	for i, j := range jobs {
		s := e.waitStatus(j.ID, envelope.StatusSucceeded, 120*time.Second)
		if s.Attempt != fails[i]+1 {
			t.Fatalf("job %s: attempt %d, want %d", j.ID, s.Attempt, fails[i]+1)
		}
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, r, "beamline_processor_jobs_total", map[string]string{"outcome": "succeeded"}); got != n {
		t.Fatalf("succeeded count %v, want %d", got, n)
	}
}

func TestPanicAndHangSucceedLater(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.KindTimeouts = map[string]time.Duration{"video": 300 * time.Millisecond}
	r := e.start(cfg)
	p := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"panic_times": 1})
	h := newJob("bob", "video", envelope.PriorityNormal, map[string]any{"hang_times": 1})
	e.submit(p)
	e.submit(h)
	for _, j := range []envelope.Job{p, h} {
		if s := e.waitStatus(j.ID, envelope.StatusSucceeded, 15*time.Second); s.Attempt != 2 {
			t.Fatalf("job %s: attempt %d, want 2", j.ID, s.Attempt)
		}
	}
	if v := counterValue(t, r, "beamline_processor_job_panics_total", nil); v != 1 {
		t.Fatalf("panics counted %v, want 1", v)
	}
	if v := counterValue(t, r, "beamline_processor_job_timeouts_total", nil); v != 1 {
		t.Fatalf("timeouts counted %v, want 1", v)
	}
	if v := counterValue(t, r, "beamline_processor_jobs_total", map[string]string{"outcome": "retried"}); v != 2 {
		t.Fatalf("retried %v, want 2", v)
	}
}

func TestMaxDeliverExceededIsDeadWithDLQCopy(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.MaxDeliver = 3
	r := e.start(cfg)
	j := newJob("alice", "video", envelope.PriorityLow, map[string]any{"fail_times": 10})
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusDead, 15*time.Second)
	if s.Attempt != 3 || s.Error == "" {
		t.Fatalf("snapshot %+v", s)
	}
	ctx := context.Background()
	m := e.lastDLQ("dlq.video")
	_, orig, err := envelope.DecodeJob(m.Data)
	if err != nil || orig.ID != j.ID {
		t.Fatalf("DLQ body is not the original envelope: %v %+v", err, orig)
	}
	if m.Header.Get(envelope.HeaderAttempts) != "3" || m.Header.Get(envelope.HeaderDeadReason) == "" ||
		m.Header.Get(envelope.HeaderOriginalSubject) != "jobs.low.video."+j.ID || m.Header.Get("Nats-Msg-Id") != "dead:"+j.ID {
		t.Fatalf("DLQ headers %v", m.Header)
	}
	// Terminated: not redelivered, and counted.
	testutil.WaitFor(t, 5*time.Second, func() bool {
		c, err := e.js.Consumer(ctx, "JOBS", jsm.ConsumerName(envelope.PriorityLow, "video"))
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	testutil.WaitFor(t, 5*time.Second, func() bool {
		return counterValue(t, r, "beamline_dlq_messages", nil) == 1
	})
	if v := counterValue(t, r, "beamline_processor_jobs_total", map[string]string{"outcome": "dead"}); v != 1 {
		t.Fatalf("dead %v", v)
	}
}
