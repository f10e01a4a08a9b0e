package jobstore

import (
	"errors"
	"testing"

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

// A message on a job's subject that holds another job is an error, not
// that job's state.
func TestLookupRefusesAMessageOfAnotherJob(t *testing.T) {
	f := setup(t)
	j := newJob("look-4")
	m, err := envelope.NewJobMsg(j, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	m.Subject = envelope.JobMsgSubject(j.Priority, j.Kind, "look-5")
	if _, err := f.js.PublishMsg(ctxT(t), m); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.Lookup(ctxT(t), "look-5"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup = %v, want an error naming the mismatch", err)
	}
}
