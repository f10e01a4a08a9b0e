package processor

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// gate is a provider whose calls block until release (or their context
// ends), then return result.
type gate struct {
	open      chan struct{}
	result    json.RawMessage
	calls     atomic.Int64
	cancelled atomic.Int64 // calls that ended by their context
	returned  atomic.Int64
}

func newGate() *gate { return &gate{open: make(chan struct{}), result: json.RawMessage(`{"ok":true}`)} }

func (g *gate) Name() string { return "gate" }

func (g *gate) release() { close(g.open) }

func (g *gate) Call(ctx context.Context, _ provider.Request) (json.RawMessage, error) {
	g.calls.Add(1)
	defer g.returned.Add(1)
	select {
	case <-g.open:
		return g.result, nil
	case <-ctx.Done():
		g.cancelled.Add(1)
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		return g.result, nil
	}
}

// withProvider serves every kind with prov.
func withProvider(cfg Config, prov provider.Provider) Config {
	cfg.Providers = map[string]provider.Provider{prov.Name(): prov}
	cfg.DefaultProvider = prov.Name()
	cfg.Kinds = []config.Kind{{Name: "image"}, {Name: "video"}}
	return cfg
}

// startGated starts the processor with a gate provider for every kind and
// submits an image job of alice's.
func (e *env) startGated() (*gate, envelope.Job) {
	e.t.Helper()
	g := newGate()
	e.start(withProvider(baseConfig(e.t), g))
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	return g, j
}

// breakEventsOnceRunning waits until j runs and its running event is
// published, then breaks EVENTS (see breakStream).
func (e *env) breakEventsOnceRunning(j envelope.Job) (restore func()) {
	e.t.Helper()
	e.waitStatus(j.ID, envelope.StatusRunning, 10*time.Second)
	testutil.WaitFor(e.t, 10*time.Second, func() bool { return len(e.events(j)) == 1 })
	return e.breakStream("EVENTS")
}

// waitFinalEvent waits until the last event of j has status st, then for
// JOBS to be empty, and checks the seqs of j's events (checkSeqs).
func (e *env) waitFinalEvent(j envelope.Job, st envelope.Status) []envelope.Snapshot {
	e.t.Helper()
	testutil.WaitFor(e.t, 15*time.Second, func() bool {
		evs := e.events(j)
		return len(evs) > 0 && evs[len(evs)-1].Status == st
	}, func() string { return "the " + string(st) + " event never appeared" })
	e.waitJobsEmpty()
	return e.checkSeqs(j, st)
}

// breakStream makes a stream refuse every publish (max_msg_size 1) until
// the returned func restores its configuration. It stays readable.
func (e *env) breakStream(name string) (restore func()) {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.js.Stream(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	orig := st.CachedInfo().Config
	broken := orig
	broken.MaxMsgSize = 1
	if _, err := e.js.UpdateStream(ctx, broken); err != nil {
		e.t.Fatal(err)
	}
	return func() {
		e.t.Helper()
		if _, err := e.js.UpdateStream(ctx, orig); err != nil {
			e.t.Fatal(err)
		}
	}
}

// jobsState is what JOBS holds and how often consumer c delivered.
func (e *env) jobsState(prio envelope.Priority, kind string) (msgs, delivered uint64) {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, "JOBS")
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.js.Consumer(ctx, "JOBS", jsm.ConsumerName(prio, kind))
	if err != nil {
		return s.CachedInfo().State.Msgs, 0
	}
	return s.CachedInfo().State.Msgs, c.CachedInfo().Delivered.Consumer
}

// waitLetGoOrRedelivered waits until the job's message was let go of (JOBS
// empty) or delivered again (it was Nak'd).
func (e *env) waitLetGoOrRedelivered(prio envelope.Priority, kind string) {
	e.t.Helper()
	testutil.WaitFor(e.t, 15*time.Second, func() bool {
		msgs, delivered := e.jobsState(prio, kind)
		return msgs == 0 || delivered >= 2
	})
}

func (e *env) waitJobsEmpty() {
	e.t.Helper()
	testutil.WaitFor(e.t, 15*time.Second, func() bool {
		msgs, _ := e.jobsState(envelope.PriorityNormal, "image")
		return msgs == 0
	})
}

// checkSeqs fails unless the job's events have seqs 1..n without gaps or
// repeats, the last one of status last.
func (e *env) checkSeqs(j envelope.Job, last envelope.Status) []envelope.Snapshot {
	e.t.Helper()
	evs := e.events(j)
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			e.t.Fatalf("event %d has seq %d: %+v", i, ev.Seq, evs)
		}
	}
	if len(evs) == 0 || evs[len(evs)-1].Status != last {
		e.t.Fatalf("events %+v, want the last one %s", evs, last)
	}
	return evs
}

// C1: EVENTS refuses publishes when the job ends. The final state is
// stored; the message must not be let go of until the final event is
// published, so it appears once EVENTS is back.
func TestFinalEventSurvivesEventsOutage(t *testing.T) {
	e := newEnv(t)
	g, j := e.startGated()
	restore := e.breakEventsOnceRunning(j)
	g.release()
	e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	e.waitLetGoOrRedelivered(envelope.PriorityNormal, "image")
	restore()

	e.waitFinalEvent(j, envelope.StatusSucceeded)
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("provider called %d times, want 1", n)
	}
}

// M3: ingest cancelled a running job but could not publish the cancelled
// event. The processor stopping the run publishes it before acking.
func TestCancelledEventPublishedWhenIngestCouldNot(t *testing.T) {
	e := newEnv(t)
	g, j := e.startGated()
	restore := e.breakEventsOnceRunning(j)
	ctx := context.Background()
	_, err := e.cancelStored(ctx, j.ID)
	if !errors.Is(err, jobstore.ErrNotPublished) {
		t.Fatalf("cancel with EVENTS down: %v", err)
	}
	if err := e.nc.Publish("cancel."+j.User+"."+j.ID, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return g.cancelled.Load() == 1 })
	e.waitLetGoOrRedelivered(envelope.PriorityNormal, "image")
	restore()

	e.waitFinalEvent(j, envelope.StatusCancelled)
}

// Minor: EVENTS refuses the started event. The stored start is announced
// once EVENTS is back, never applied twice: seqs have no gaps or repeats.
func TestStartedPublishFailureLeavesNoSeqGap(t *testing.T) {
	e := newEnv(t)
	restore := e.breakStream("EVENTS")
	e.start(baseConfig(t))
	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"duration_ms": 10})
	e.submit(j)
	testutil.WaitFor(t, 10*time.Second, func() bool { return e.snapshot(j.ID).Seq >= 1 })
	e.waitLetGoOrRedelivered(envelope.PriorityNormal, "image")
	restore()
	e.waitStatus(j.ID, envelope.StatusSucceeded, 15*time.Second)
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusSucceeded)
	if evs[0].Status != envelope.StatusRunning || evs[0].Attempt != 1 {
		t.Fatalf("first event %+v, want the stored start of attempt 1", evs[0])
	}
}

// M4: a job whose final event is older than the duplicate window (here:
// stored without Nats-Msg-Id) is delivered again. No second final event.
func TestNoSecondFinalEventAfterDuplicateWindow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	if _, err := e.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	restore := e.breakStream("EVENTS")
	snap, err := e.cancelStored(ctx, j.ID)
	if !errors.Is(err, jobstore.ErrNotPublished) {
		t.Fatal(err)
	}
	restore()
	m, err := envelope.NewEventMsg(envelope.TypeCancelled, snap, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Del(envelope.HeaderMsgID)
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	e.publish(j)
	e.start(baseConfig(t))
	e.waitJobsEmpty()
	if evs := e.events(j); len(evs) != 1 {
		t.Fatalf("%d events, want 1: %+v", len(evs), evs)
	}
}

// M4, DLQ: a dead job delivered again after the DLQ duplicate window (here:
// DLQ recreated, its copy restored without Nats-Msg-Id) is not copied again.
func TestNoSecondDLQCopyAfterDuplicateWindow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := baseConfig(t)
	cfg.MaxDeliver = 1
	r := e.start(cfg)
	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"fail_times": 10})
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusDead, 15*time.Second)
	e.waitJobsEmpty()
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	dlq, err := e.js.Stream(ctx, "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	copy1, err := dlq.GetLastMsgForSubject(ctx, "dlq.image")
	if err != nil {
		t.Fatal(err)
	}
	dcfg := dlq.CachedInfo().Config
	if err := e.js.DeleteStream(ctx, "DLQ"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.CreateStream(ctx, dcfg); err != nil {
		t.Fatal(err)
	}
	restored := nats.NewMsg(copy1.Subject)
	restored.Header, restored.Data = copy1.Header, copy1.Data
	restored.Header.Del(envelope.HeaderMsgID)
	if _, err := e.js.PublishMsg(ctx, restored); err != nil {
		t.Fatal(err)
	}

	// The same job again, past the JOBS duplicate window too: as if
	// delivered again long after it died.
	jm, err := envelope.NewJobMsg(j, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	jm.Header.Del(envelope.HeaderMsgID)
	if ack, err := e.js.PublishMsg(ctx, jm); err != nil || ack.Duplicate {
		t.Fatalf("job published again: %+v, %v", ack, err)
	}
	e.start(cfg)
	e.waitJobsEmpty()
	dlq, err = e.js.Stream(ctx, "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if n := dlq.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("DLQ holds %d copies, want 1", n)
	}
	if s := e.snapshot(j.ID); s.Status != envelope.StatusDead || s.Attempt != 1 {
		t.Fatalf("snapshot %+v", s)
	}
}

// Low: a job published straight to its subject with the id of another
// user's job is dead-lettered as invalid and never touches that job.
func TestCollidingJobIDIsDeadLetteredNotRun(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice := newJob("alice", "image", envelope.PriorityNormal, nil)
	if _, err := e.store.Create(ctx, alice); err != nil {
		t.Fatal(err)
	}
	bob := alice
	bob.User = "bob"
	e.publish(bob)
	e.start(baseConfig(t))
	e.waitJobsEmpty()
	dlq, err := e.js.Stream(ctx, "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	m, err := dlq.GetLastMsgForSubject(ctx, "dlq.image")
	if err != nil {
		t.Fatalf("no DLQ copy: %v", err)
	}
	if reason := m.Header.Get(envelope.HeaderDeadReason); !strings.Contains(reason, "collides") {
		t.Fatalf("DLQ reason %q", reason)
	}
	if s := e.snapshot(alice.ID); s.User != "alice" || s.Status != envelope.StatusQueued || s.Seq != 0 {
		t.Fatalf("alice's job was touched: %+v", s)
	}
	if evs := e.events(alice); len(evs) != 0 {
		t.Fatalf("events %+v", evs)
	}
	if evs := e.events(bob); len(evs) != 0 {
		t.Fatalf("events %+v", evs)
	}
}
