package processor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

func TestStepsSucceedWithOrderedEvents(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig(t))
	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"steps": 3, "duration_ms": 300})
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	if s.Progress != 100 || s.Attempt != 1 || len(s.Result) == 0 {
		t.Fatalf("snapshot %+v", s)
	}
	var got []string
	for _, ev := range e.events(j) {
		st := string(ev.Status)
		if ev.Status == envelope.StatusRunning && ev.Progress > 0 {
			st = "progress"
		}
		got = append(got, st)
	}
	want := "running progress progress progress succeeded"
	if strings.Join(got, " ") != want {
		t.Fatalf("events %v, want %s", got, want)
	}
}

func TestFailTimesSucceedsOnLaterAttempt(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig(t))
	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"fail_times": 2})
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	if s.Attempt != 3 {
		t.Fatalf("attempt %d, want 3", s.Attempt)
	}
	var retrying int
	for _, ev := range e.events(j) {
		if ev.Status == envelope.StatusRetrying {
			retrying++
		}
		// The job-detail timeline names the provider of every event.
		if ev.Provider != "sim" {
			t.Errorf("event seq %d (%s): provider %q, want sim", ev.Seq, ev.Status, ev.Provider)
		}
	}
	if retrying != 2 {
		t.Fatalf("%d retrying events, want 2", retrying)
	}
}

func TestTerminalFailure(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig(t))
	j := newJob("alice", "video", envelope.PriorityHigh, map[string]any{"fail": "terminal"})
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusFailed, 10*time.Second)
	if s.Error == "" || s.Attempt != 1 {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestJobPublishedStraightIsTracked(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig(t))
	j := newJob("bob", "image", envelope.PriorityLow, map[string]any{"steps": 1})
	e.publish(j) // no queued snapshot: the processor creates it
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	if s.User != "bob" || s.Kind != "image" || s.Priority != envelope.PriorityLow {
		t.Fatalf("snapshot %+v", s)
	}
}

// A job published to its queue's subject, as publishers from before the
// one-write submission do, is stored by JOBS under the QueueToken and runs
// like any other on the consumer's one filter.
func TestJobPublishedToTheQueueSubjectRuns(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig(t))
	j := newJob("bob", "image", envelope.PriorityLow, map[string]any{"steps": 1})
	m, err := envelope.NewJobMsg(j, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	m.Subject = envelope.JobSubject(j.Priority, j.Kind)
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	if s.User != "bob" || s.Kind != "image" || s.Priority != envelope.PriorityLow {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestMalformedMessageGoesToDLQAndConsumerGoesOn(t *testing.T) {
	e := newEnv(t)
	r := e.start(baseConfig(t))
	ctx := context.Background()
	bad := nats.NewMsg("jobs.normal.image")
	bad.Data = []byte(`{"specversion":"1.0","this is":"not a job"`)
	if _, err := e.js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)

	var dlq jetstream.Stream
	testutil.WaitFor(t, 5*time.Second, func() bool {
		var err error
		dlq, err = e.js.Stream(ctx, "DLQ")
		return err == nil && dlq.CachedInfo().State.Msgs == 1
	})
	m, err := dlq.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != string(bad.Data) || m.Subject != "dlq.image" ||
		m.Header.Get(envelope.HeaderOriginalSubject) != "jobs.normal.image" || m.Header.Get(envelope.HeaderDeadReason) == "" {
		t.Fatalf("DLQ entry %s %q %v", m.Subject, m.Data, m.Header)
	}
	// Terminated, not redelivered: the work queue is empty.
	testutil.WaitFor(t, 5*time.Second, func() bool {
		s, err := e.js.Stream(ctx, "JOBS")
		return err == nil && s.CachedInfo().State.Msgs == 0
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if v := counterValue(t, r, "beamline_processor_jobs_total", map[string]string{"outcome": "invalid"}); v != 1 {
		t.Fatalf("invalid count %v", v)
	}
}

// A job subject names its job (GET reads a queued job there): a message on
// another job's subject is invalid and dead-lettered, never run.
func TestJobOnAnotherJobsSubjectGoesToDLQ(t *testing.T) {
	e := newEnv(t)
	r := e.start(baseConfig(t))
	ctx := context.Background()
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	m, err := envelope.NewJobMsg(j, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	m.Subject = envelope.JobMsgSubject(j.Priority, j.Kind, "someone-else")
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return counterValue(t, r, "beamline_processor_jobs_total", map[string]string{"outcome": "invalid"}) == 1
	})
	if s := e.snapshot(j.ID); s.ID != "" {
		t.Fatalf("the job was run: %+v", s)
	}
	dlq, err := e.js.Stream(ctx, "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	d, err := dlq.GetMsg(ctx, 1)
	if err != nil || d.Header.Get(envelope.HeaderOriginalSubject) != m.Subject {
		t.Fatalf("DLQ entry %v: %v", d, err)
	}
}
