package processor

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// A job whose last allowed run died with its process: the stored snapshot
// says running, attempt == MaxDeliver. Its redelivery is dead-lettered
// without running the provider (which would have succeeded).
func TestDeliveryPastTheLimitIsDeadWithoutRunning(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.MaxDeliver = 3
	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"duration_ms": 10})
	if _, err := e.store.Create(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	if _, err := e.apply(context.Background(), j.ID, envelope.TypeStarted, func(s *envelope.Snapshot) error {
		s.Status, s.Attempt = envelope.StatusRunning, 3
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.publish(j)
	r := e.start(cfg)
	s := e.waitStatus(j.ID, envelope.StatusDead, 15*time.Second)
	if s.Attempt != 3 || !strings.Contains(s.Error, "never finished") {
		t.Fatalf("dead snapshot %+v", s)
	}
	ctx := context.Background()
	m := e.lastDLQ("dlq.image")
	if m.Header.Get(envelope.HeaderAttempts) != "3" || m.Header.Get("Nats-Msg-Id") != "dead:"+j.ID ||
		!strings.Contains(m.Header.Get(envelope.HeaderDeadReason), "never finished") {
		t.Fatalf("DLQ headers %v", m.Header)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { // termed, not redelivered
		c, err := e.js.Consumer(ctx, "JOBS", jsm.ConsumerName(envelope.PriorityNormal, "image"))
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	if v := counterValue(t, r, "beamline_provider_calls_total", nil); v != 0 {
		t.Fatalf("provider called %v times for a job with no attempts left", v)
	}
	for _, ev := range e.events(j) {
		if ev.Status == envelope.StatusRunning && ev.Attempt > 3 {
			t.Fatalf("a fourth run was started: %+v", ev)
		}
	}
}

// The consumers redeliver without limit, also when they were created by an
// older definition with max_deliver 5: the processor owns the limit.
func TestConsumersRedeliverWithoutLimit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := jsm.ApplyConsumer(ctx, e.js, envelope.PriorityHigh, "image", func(c *jetstream.ConsumerConfig) { c.MaxDeliver = 5 }); err != nil {
		t.Fatal(err)
	}
	r := e.start(baseConfig(t))
	j := newJob("alice", "image", envelope.PriorityHigh, nil)
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	for _, k := range []string{"image", "video"} {
		for _, prio := range envelope.Priorities {
			c, err := e.js.Consumer(ctx, "JOBS", jsm.ConsumerName(prio, k))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.CachedInfo().Config.MaxDeliver; got != -1 {
				t.Fatalf("%s max_deliver %d, want -1", jsm.ConsumerName(prio, k), got)
			}
		}
	}
	_ = r
}

// startedAttempts lists the attempt of every started event of j.
func (e *env) startedAttempts(j envelope.Job) []int {
	var out []int
	prev := envelope.StatusQueued
	for _, ev := range e.events(j) {
		if ev.Status == envelope.StatusRunning && prev != envelope.StatusRunning {
			out = append(out, ev.Attempt)
		}
		prev = ev.Status
	}
	return out
}

// submitAlice submits n normal-priority image jobs of alice's with input
// sim.
func (e *env) submitAlice(n int, sim map[string]any) []envelope.Job {
	e.t.Helper()
	jobs := make([]envelope.Job, n)
	for i := range jobs {
		jobs[i] = newJob("alice", "image", envelope.PriorityNormal, sim)
		e.submit(jobs[i])
	}
	return jobs
}

// waitOneRunning waits until r runs one of alice's jobs and parks the
// others for her slot (MaxPerUser 1), and returns the running one.
func (e *env) waitOneRunning(r *running, jobs []envelope.Job) envelope.Job {
	e.t.Helper()
	testutil.WaitFor(e.t, 10*time.Second, func() bool {
		return counterValue(e.t, r, "beamline_processor_waiting", nil) == float64(len(jobs)-1) &&
			counterValue(e.t, r, "beamline_processor_inflight", nil) == 1
	})
	var run envelope.Job
	for _, j := range jobs {
		if e.snapshot(j.ID).Status == envelope.StatusRunning {
			run = j
		}
	}
	return run
}

// A full waiting room Naks one user's surplus over and over; none of those
// deliveries is a run, so none costs an attempt: every job runs exactly
// twice (fail_times 1) as attempts 1 and 2, though MaxDeliver is 2.
func TestWaitingRoomNaksCostNoAttempt(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.MaxDeliver = 2
	cfg.Concurrency = 2
	cfg.MaxPerUser = 1
	cfg.WaitingRoom = 1
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	r := e.start(cfg)
	jobs := e.submitAlice(8, map[string]any{"fail_times": 1, "duration_ms": 30})
	for _, j := range jobs {
		if s := e.waitStatus(j.ID, envelope.StatusSucceeded, 30*time.Second); s.Attempt != 2 {
			t.Fatalf("job %s: attempt %d, want 2", j.ID, s.Attempt)
		}
		if got := e.startedAttempts(j); len(got) != 2 || got[0] != 1 || got[1] != 2 {
			t.Fatalf("job %s started as attempts %v, want [1 2]", j.ID, got)
		}
	}
	c, err := e.js.Consumer(context.Background(), "JOBS", jsm.ConsumerName(envelope.PriorityNormal, "image"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if runs := uint64(2 * len(jobs)); info.Delivered.Consumer <= runs {
		t.Fatalf("%d deliveries for %d runs: the waiting room never Nak'd, the test shows nothing", info.Delivered.Consumer, runs)
	}
	if v := counterValue(t, r, "beamline_processor_jobs_total", map[string]string{"outcome": "dead"}); v != 0 {
		t.Fatalf("%v jobs dead", v)
	}
}

// With MaxDeliver 1, shutdowns hand back parked jobs and a running one
// (interrupted when the grace runs out) without costing them their only
// attempt: the next processor runs every job as attempt 1.
func TestShutdownNaksCostNoAttempt(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.MaxDeliver = 1
	cfg.Concurrency = 2
	cfg.MaxPerUser = 1
	cfg.AckWait = time.Minute // a takeover within the test is a hand-back, not an ack_wait expiry
	cfg.Grace = 100 * time.Millisecond
	a := e.start(cfg)
	// Long enough to be still running when the grace of a runs out.
	jobs := e.submitAlice(4, map[string]any{"duration_ms": 3000})
	interrupted := e.waitOneRunning(a, jobs)
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	if s := e.snapshot(interrupted.ID); s.Status != envelope.StatusRetrying || s.Attempt != 0 {
		t.Fatalf("interrupted job after shutdown: %+v, want retrying with its attempt given back", s)
	}
	cfg.Grace = 5 * time.Second
	cfg.Concurrency, cfg.MaxPerUser = 4, 4 // all at once: the test takes one job's time
	e.start(cfg)
	for _, j := range jobs {
		if s := e.waitStatus(j.ID, envelope.StatusSucceeded, 30*time.Second); s.Attempt != 1 {
			t.Fatalf("job %s: attempt %d after hand-overs, want 1", j.ID, s.Attempt)
		}
	}
}

// A supervised child that keeps failing (the cancel subscriber cannot
// subscribe) makes the supervisor give up, and Run returns that error so
// the process exits non-zero and its orchestrator restarts it.
func TestSupervisorGivesUpOnFailingChild(t *testing.T) {
	e := newEnv(t)
	nc, err := nats.Connect(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := New(baseConfig(t), nc, js, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	p.cancelSubject = "cancel..broken" // nats.ErrBadSubject on every (re)start
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }() // never cancelled: only giving up ends it
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not give up")
	}
	if !errors.Is(err, flow.ErrRestartIntensity) || !errors.Is(err, nats.ErrBadSubject) {
		t.Fatalf("Run = %v, want ErrRestartIntensity caused by ErrBadSubject", err)
	}
	r := &running{p: p, reg: reg}
	if v := counterValue(t, r, "beamline_supervisor_restarts_total", map[string]string{"child": "cancel"}); v < 1 {
		t.Fatalf("cancel restarts counted %v", v)
	}
}

// A job nobody has written is loaded as its message's queued snapshot at
// RevAbsent, with one read and no write; read errors are retried, bounded
// and backed off, and a cancelled context stops them at once.
func TestLoadSnapshot(t *testing.T) {
	gets := 0
	var answer error
	get := func(context.Context, string) (envelope.Snapshot, uint64, error) {
		gets++
		return envelope.Snapshot{}, 0, answer
	}
	job := envelope.Job{ID: "j1", User: "u1", Kind: "image", Priority: envelope.PriorityLow, CreatedAt: time.Now().UTC()}
	d := &delivery{job: job}
	answer = jobstore.ErrNotFound
	if err := loadSnapshot(context.Background(), d, get); err != nil || gets != 1 {
		t.Fatalf("not found: err %v after %d reads", err, gets)
	}
	if d.rev != jobstore.RevAbsent || !reflect.DeepEqual(d.snap, envelope.NewSnapshot(job)) {
		t.Fatalf("loaded %+v at %d, want the queued snapshot at RevAbsent", d.snap, d.rev)
	}

	answer, gets = errors.New("read failed"), 0
	done := make(chan error, 1)
	go func() { done <- loadSnapshot(context.Background(), d, get) }()
	select {
	case err := <-done:
		if !errors.Is(err, answer) || gets != loadTries {
			t.Fatalf("err %v after %d reads, want %d reads", err, gets, loadTries)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("load never gave up")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gets = 0
	if err := loadSnapshot(ctx, d, get); err == nil || gets != 1 {
		t.Fatalf("cancelled: err %v after %d reads", err, gets)
	}
}

// Minor 4: the run's first read is stale — between it and the started
// write, a run of the job was recorded (as a crashed run on another
// processor would be). The started write loses its compare-and-set and
// must not store this run under the recorded run's number: the crashed
// run counts, and this run is attempt 2.
func TestStartedWriteCountsARunRecordedSinceTheRead(t *testing.T) {
	e := newEnv(t)
	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"duration_ms": 10})
	var once sync.Once
	e.startWith(baseConfig(t), func(p *Processor) {
		p.hooks.afterLoad = func(d *delivery) {
			once.Do(func() {
				if _, err := e.apply(context.Background(), d.job.ID, envelope.TypeStarted, func(s *envelope.Snapshot) error {
					s.Status, s.Attempt = envelope.StatusRunning, 1
					return nil
				}); err != nil {
					t.Errorf("recording a run: %v", err)
				}
			})
		}
	})
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 15*time.Second)
	if s.Attempt != 2 {
		t.Fatalf("succeeded at attempt %d, want 2 (the run recorded since the read counts): %+v", s.Attempt, s)
	}
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusSucceeded)
	for _, ev := range evs[1:] {
		if ev.Attempt != 2 {
			t.Fatalf("events %+v: every change after the recorded run is attempt 2", evs)
		}
	}
}
