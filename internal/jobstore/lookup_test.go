package jobstore

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// publishJob stores j's message in JOBS, as ingest does.
func (f *fixture) publishJob(t *testing.T, j envelope.Job) {
	t.Helper()
	m, err := envelope.NewJobMsg(j, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.js.PublishMsg(ctxT(t), m, jetstream.WithExpectStream(streams.Jobs)); err != nil {
		t.Fatal(err)
	}
}

// A job only in JOBS is read as its queued snapshot at RevAbsent; once
// its snapshot is stored, that is what Lookup answers, message or not.
func TestLookupReadsAQueuedJobFromJobs(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	if _, _, err := f.store.Lookup(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup(unknown) = %v, want ErrNotFound", err)
	}
	j := newJob("look-1")
	f.publishJob(t, j)
	other := newJob("look-10") // a longer id with the same prefix is another job
	other.Priority, other.Kind = envelope.PriorityHigh, "video"
	f.publishJob(t, other)

	got, rev, err := f.store.Lookup(ctx, j.ID)
	if err != nil || rev != RevAbsent {
		t.Fatalf("Lookup = %+v rev %d, %v", got, rev, err)
	}
	if want := envelope.NewSnapshot(j); got.ID != want.ID || got.User != want.User || got.Kind != want.Kind ||
		got.Priority != want.Priority || got.Status != envelope.StatusQueued || got.Seq != 0 ||
		!got.CreatedAt.Equal(j.CreatedAt) || !got.UpdatedAt.Equal(j.CreatedAt) {
		t.Fatalf("Lookup = %+v, want %+v", got, want)
	}
	if got, _, err := f.store.Lookup(ctx, other.ID); err != nil || got.Kind != "video" || got.Priority != envelope.PriorityHigh {
		t.Fatalf("Lookup(other) = %+v, %v", got, err)
	}
	if _, _, err := f.store.Get(ctx, j.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup wrote a snapshot: %v", err)
	}

	// The first change creates the snapshot (seq 1) and announces it.
	started, rev, err := f.store.ApplyAt(ctx, got, rev, envelope.TypeStarted, start)
	if err != nil || started.Seq != 1 || started.Status != envelope.StatusRunning || rev == RevAbsent {
		t.Fatalf("ApplyAt(RevAbsent) = %+v rev %d, %v", started, rev, err)
	}
	if n := f.eventCount(t, j.ID); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	got, grev, err := f.store.Lookup(ctx, j.ID)
	if err != nil || grev != rev || got.Status != envelope.StatusRunning || got.Seq != 1 {
		t.Fatalf("Lookup after the first change = %+v rev %d (want %d), %v", got, grev, rev, err)
	}
}

// Two first changes race (a processor's outcome and a cancel): exactly one
// creates the snapshot; the other is applied to what it finds, here a
// terminal state, so it writes and announces nothing.
func TestApplyAtRevAbsentLosesToAnEarlierCreate(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("look-2")
	f.publishJob(t, j)
	queued, rev, err := f.store.Lookup(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	cancelled, _, err := f.store.ApplyAt(ctx, queued, rev, envelope.TypeCancelled, setStatus(envelope.StatusCancelled))
	if err != nil || cancelled.Seq != 1 || cancelled.Status != envelope.StatusCancelled {
		t.Fatalf("cancel = %+v, %v", cancelled, err)
	}
	got, _, err := f.store.ApplyAt(ctx, queued, rev, envelope.TypeSucceeded, setStatus(envelope.StatusSucceeded))
	if !errors.Is(err, ErrTerminal) || got.Status != envelope.StatusCancelled {
		t.Fatalf("late first change = %+v, %v; want the cancelled snapshot with ErrTerminal", got, err)
	}
	if n := f.eventCount(t, j.ID); n != 1 {
		t.Fatalf("%d events, want 1 (the cancel's)", n)
	}

	// A first change that finds a non-terminal snapshot is applied to it.
	k := newJob("look-3")
	f.publishJob(t, k)
	queued, rev, err = f.store.Lookup(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.ApplyAt(ctx, queued, rev, envelope.TypeStarted, start); err != nil {
		t.Fatal(err)
	}
	got, _, err = f.store.ApplyAt(ctx, queued, rev, envelope.TypeProgress, func(s *envelope.Snapshot) error { s.Progress = 40; return nil })
	if err != nil || got.Seq != 2 || got.Status != envelope.StatusRunning || got.Progress != 40 {
		t.Fatalf("second first change = %+v, %v", got, err)
	}
}

// A message whose subject and envelope disagree (another id, kind or
// priority: the processor dead-letters it) is not the job its subject names.
func TestLookupIgnoresAMessageThatIsNotItsJob(t *testing.T) {
	f := setup(t)
	for _, c := range []struct {
		name string
		bend func(j *envelope.Job, m *nats.Msg)
	}{
		{"another id", func(j *envelope.Job, m *nats.Msg) { m.Subject = envelope.JobMsgSubject(j.Priority, j.Kind, "look-5") }},
		{"another kind", func(j *envelope.Job, m *nats.Msg) { m.Subject = envelope.JobMsgSubject(j.Priority, "video", "look-5") }},
		{"another priority", func(j *envelope.Job, m *nats.Msg) {
			m.Subject = envelope.JobMsgSubject(envelope.PriorityLow, j.Kind, "look-5")
		}},
	} {
		j := newJob("look-5")
		if c.name != "another id" {
			j.ID = "look-5"
		} else {
			j.ID = "look-4"
		}
		m, err := envelope.NewJobMsg(j, "/test", "")
		if err != nil {
			t.Fatal(err)
		}
		c.bend(&j, m)
		m.Header.Set(envelope.HeaderMsgID, c.name)
		if _, err := f.js.PublishMsg(ctxT(t), m); err != nil {
			t.Fatal(err)
		}
		if got, _, err := f.store.Lookup(ctxT(t), "look-5"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: Lookup = %+v, %v; want ErrNotFound", c.name, got, err)
		}
		s, err := f.js.Stream(ctxT(t), streams.Jobs)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// Two messages for one id (a late copy, or another publisher reusing the
// id): Lookup answers with the first, the one the processor runs.
func TestLookupTakesTheFirstMessage(t *testing.T) {
	f := setup(t)
	j := newJob("look-6")
	f.publishJob(t, j)
	later := j
	later.User, later.Priority = "mallory", envelope.PriorityHigh
	m, err := envelope.NewJobMsg(later, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Set(envelope.HeaderMsgID, "another-msg-id") // past de-duplication
	if _, err := f.js.PublishMsg(ctxT(t), m); err != nil {
		t.Fatal(err)
	}
	got, rev, err := f.store.Lookup(ctxT(t), j.ID)
	if err != nil || rev != RevAbsent || got.User != "alice" || got.Priority != envelope.PriorityNormal {
		t.Fatalf("Lookup = %+v rev %d, %v; want alice's first message", got, rev, err)
	}
}
