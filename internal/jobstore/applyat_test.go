package jobstore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
)

// countingKV is the real KV bucket with its reads counted.
type countingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

func (c *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	c.gets.Add(1)
	return c.KeyValue.Get(ctx, key)
}

func countingStore(t *testing.T, f *fixture) (*Store, *countingKV) {
	t.Helper()
	kv := &countingKV{KeyValue: f.kv}
	return New(f.js, kv, f.store.cfg), kv
}

// The happy path of a job carried by revision: one read (the Get that
// starts it), then every change is a write at the known revision.
func TestApplyAtWritesWithoutReading(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	store, kv := countingStore(t, f)
	j := newJob("job-at")
	if _, err := store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	cur, rev, err := store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur, rev2, err := store.ApplyAt(ctx, cur, rev, envelope.TypeStarted, start)
	if err != nil || rev2 <= rev || cur.Seq != 1 || cur.Status != envelope.StatusRunning || cur.Attempt != 1 {
		t.Fatalf("started: %+v rev %d→%d, %v", cur, rev, rev2, err)
	}
	cur, rev3, err := store.ApplyAt(ctx, cur, rev2, envelope.TypeSucceeded, setStatus(envelope.StatusSucceeded))
	if err != nil || rev3 <= rev2 || cur.Seq != 2 || cur.Status != envelope.StatusSucceeded {
		t.Fatalf("succeeded: %+v rev %d→%d, %v", cur, rev2, rev3, err)
	}
	if n := kv.gets.Load(); n != 1 {
		t.Fatalf("%d KV reads for get+start+succeed, want 1", n)
	}
	stored, storedRev, err := f.store.Get(ctx, j.ID)
	if err != nil || storedRev != rev3 || stored.Seq != 2 || stored.Status != envelope.StatusSucceeded {
		t.Fatalf("stored %+v rev %d (want %d), %v", stored, storedRev, rev3, err)
	}
	if n := f.eventCount(t, j.ID); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
	// A terminal snapshot in hand is final: nothing is read or written.
	got, gotRev, err := store.ApplyAt(ctx, cur, rev3, envelope.TypeFailed, setStatus(envelope.StatusFailed))
	if !errors.Is(err, ErrTerminal) || got.Status != envelope.StatusSucceeded || gotRev != rev3 || kv.gets.Load() != 1 {
		t.Fatalf("after terminal: %+v rev %d, %v, reads %d", got, gotRev, err, kv.gets.Load())
	}
}

// A stale revision (someone wrote meanwhile) falls back to the
// read-modify-write loop, which applies the mutation to what is stored.
func TestApplyAtStaleRevisionFallsBack(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	store, kv := countingStore(t, f)
	j := newJob("job-stale")
	if _, err := store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	cur, rev, err := store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur, rev, err = store.ApplyAt(ctx, cur, rev, envelope.TypeStarted, start)
	if err != nil {
		t.Fatal(err)
	}
	// Another writer: a progress report through Apply.
	if _, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeProgress, func(s *envelope.Snapshot) error {
		s.Progress = 40
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reads := kv.gets.Load()
	got, gotRev, err := store.ApplyAt(ctx, cur, rev, envelope.TypeSucceeded, setStatus(envelope.StatusSucceeded))
	if err != nil || got.Seq != 3 || got.Progress != 40 || got.Status != envelope.StatusSucceeded || gotRev <= rev {
		t.Fatalf("after conflict: %+v rev %d, %v", got, gotRev, err)
	}
	if kv.gets.Load() != reads+1 {
		t.Fatalf("fallback read %d times, want 1", kv.gets.Load()-reads)
	}
	if n := f.eventCount(t, j.ID); n != 3 {
		t.Fatalf("%d events, want 3 (the lost compare-and-set published nothing)", n)
	}
}

// A job cancelled behind the holder's back: the fallback finds it terminal.
func TestApplyAtAfterCancelIsTerminal(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-atc")
	if _, err := f.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	cur, rev, err := f.store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur, rev, err = f.store.ApplyAt(ctx, cur, rev, envelope.TypeStarted, start)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeCancelled, setStatus(envelope.StatusCancelled)); err != nil {
		t.Fatal(err)
	}
	got, _, err := f.store.ApplyAt(ctx, cur, rev, envelope.TypeSucceeded, setStatus(envelope.StatusSucceeded))
	if !errors.Is(err, ErrTerminal) || got.Status != envelope.StatusCancelled {
		t.Fatalf("succeed after cancel = %+v, %v; want cancelled + ErrTerminal", got, err)
	}
	// Holding the terminal snapshot: refused before mutate, nothing written.
	boom := errors.New("boom")
	fresh, freshRev, _ := f.store.Get(ctx, j.ID)
	got, gotRev, err := f.store.ApplyAt(ctx, fresh, freshRev, envelope.TypeProgress, func(*envelope.Snapshot) error { return boom })
	if !errors.Is(err, ErrTerminal) || gotRev != freshRev || got.Seq != fresh.Seq {
		t.Fatalf("mutate on terminal: %+v rev %d, %v", got, gotRev, err)
	}
}

// rev 0 means "unknown": ApplyAt reads like Apply.
func TestApplyAtUnknownRevisionReads(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-zero")
	if _, err := f.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, _, err := f.store.ApplyAt(ctx, envelope.Snapshot{ID: j.ID}, 0, envelope.TypeStarted, func(*envelope.Snapshot) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("mutate error = %v", err)
	}
	got, rev, err := f.store.ApplyAt(ctx, envelope.Snapshot{ID: j.ID}, 0, envelope.TypeStarted, start)
	if err != nil || got.Seq != 1 || got.User != "alice" || rev == 0 {
		t.Fatalf("ApplyAt rev 0 = %+v rev %d, %v", got, rev, err)
	}
}

// CreateAt returns the revision of the queued snapshot it stored, so the
// job's first change needs no read at all; a second CreateAt is ErrExists.
func TestCreateAtRevisionCarriesTheFirstChange(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	store, kv := countingStore(t, f)
	j := newJob("job-create-at")
	cur, rev, err := store.CreateAt(ctx, j)
	if err != nil || rev == 0 || cur.Seq != 0 || cur.Status != envelope.StatusQueued {
		t.Fatalf("create: %+v rev %d, %v", cur, rev, err)
	}
	if _, _, err := store.CreateAt(ctx, j); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	cur, rev2, err := store.ApplyAt(ctx, cur, rev, envelope.TypeSucceeded, setStatus(envelope.StatusSucceeded))
	if err != nil || rev2 <= rev || cur.Seq != 1 || cur.Status != envelope.StatusSucceeded {
		t.Fatalf("succeeded: %+v rev %d→%d, %v", cur, rev, rev2, err)
	}
	if n := kv.gets.Load(); n != 0 {
		t.Fatalf("%d KV reads for create+succeed, want 0", n)
	}
}
