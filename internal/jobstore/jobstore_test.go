package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

func TestMain(m *testing.M) {
	// JOBS sources SCHEDULED; the server may leave its source setup waiting
	// for a consumer reply up to 30 s after a shutdown (nats-server stream.go).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"))
}

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

type fixture struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	store *Store
	now   time.Time
}

func setup(t *testing.T) *fixture {
	t.Helper()
	_, _, js := natstest.StartWithStreams(t)
	kv, err := jsm.JobStatus(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{js: js, kv: kv, now: time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)}
	f.store = New(js, kv, Config{
		Source:      "/test",
		Traceparent: func(context.Context) string { return traceparent },
		Now:         func() time.Time { return f.now },
	})
	return f
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newJob(id string) envelope.Job {
	return envelope.Job{
		ID: id, User: "alice", Kind: "image", Priority: envelope.PriorityNormal,
		Input:     json.RawMessage(`{"prompt":"x"}`),
		CreatedAt: time.Date(2025, 5, 1, 11, 0, 0, 0, time.UTC),
	}
}

func start(s *envelope.Snapshot) error {
	s.Status = envelope.StatusRunning
	s.Attempt++
	return nil
}

func setStatus(st envelope.Status) Mutation {
	return func(s *envelope.Snapshot) error { s.Status = st; return nil }
}

// eventCount is the number of messages EVENTS holds for a job.
func (f *fixture) eventCount(t *testing.T, id string) uint64 {
	t.Helper()
	st, err := f.js.Stream(ctxT(t), streams.Events)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctxT(t), jetstream.WithSubjectFilter(envelope.EventSubject("alice", id)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[envelope.EventSubject("alice", id)]
}

// events reads every stored event of a job, in stream order.
func (f *fixture) events(t *testing.T, id string) []*jetstream.RawStreamMsg {
	t.Helper()
	st, err := f.js.Stream(ctxT(t), streams.Events)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	subj := envelope.EventSubject("alice", id)
	for seq := uint64(1); ; seq++ {
		m, err := st.GetMsg(ctxT(t), seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
		seq = m.Sequence
	}
}

func TestCreateThenApplyStarted(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-1")
	snap, err := f.store.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Status != envelope.StatusQueued || snap.Seq != 0 {
		t.Fatalf("Create = %+v", snap)
	}
	if n := f.eventCount(t, j.ID); n != 0 {
		t.Fatalf("Create published %d events", n)
	}
	if _, err := f.store.Create(ctx, j); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}

	got, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeStarted, start)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 1 || got.Status != envelope.StatusRunning || got.Attempt != 1 || !got.UpdatedAt.Equal(f.now) {
		t.Fatalf("Apply = %+v", got)
	}
	stored, _, err := f.store.Get(ctx, j.ID)
	if err != nil || stored.Seq != 1 || stored.Status != envelope.StatusRunning {
		t.Fatalf("Get = %+v, %v", stored, err)
	}

	evs := f.events(t, j.ID)
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	m := evs[0]
	if m.Subject != "events.alice.job-1" {
		t.Errorf("subject = %q", m.Subject)
	}
	if got := m.Header.Get(nats.MsgIdHdr); got != "job-1:1" {
		t.Errorf("Nats-Msg-Id = %q", got)
	}
	if got := m.Header.Get(envelope.HeaderSeq); got != "1" {
		t.Errorf("Beamline-Seq = %q", got)
	}
	if got := m.Header.Get(envelope.HeaderTraceparent); got != traceparent {
		t.Errorf("traceparent = %q", got)
	}
	e, es, err := envelope.DecodeEvent(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != envelope.TypeStarted || e.Source != "/test" || es.Seq != 1 || es.Status != envelope.StatusRunning {
		t.Errorf("event = %+v %+v", e, es)
	}
}

func TestApplyUnknownJob(t *testing.T) {
	f := setup(t)
	if _, err := f.store.Apply(ctxT(t), "nope", nil, envelope.TypeStarted, start); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Apply = %v, want ErrNotFound", err)
	}
	if _, _, err := f.store.Get(ctxT(t), "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
}

func TestApplyWithSeedCreates(t *testing.T) {
	f := setup(t)
	j := newJob("direct-1")
	got, err := f.store.Apply(ctxT(t), j.ID, &j, envelope.TypeStarted, start)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 1 || got.Status != envelope.StatusRunning || got.User != "alice" || got.Kind != "image" ||
		!got.CreatedAt.Equal(j.CreatedAt) {
		t.Fatalf("Apply = %+v", got)
	}
	if n := f.eventCount(t, j.ID); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	// The seed is ignored once the job exists.
	got, err = f.store.Apply(ctxT(t), j.ID, &j, envelope.TypeProgress, func(s *envelope.Snapshot) error { s.Progress = 50; return nil })
	if err != nil || got.Seq != 2 || got.Progress != 50 {
		t.Fatalf("second Apply = %+v, %v", got, err)
	}
}

func TestApplyTerminal(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-t")
	if _, err := f.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeStarted, start); err != nil {
		t.Fatal(err)
	}
	done, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeSucceeded, func(s *envelope.Snapshot) error {
		s.Status, s.Progress, s.Result = envelope.StatusSucceeded, 100, json.RawMessage(`{"ok":true}`)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, rev, err := f.store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	before := f.eventCount(t, j.ID)

	called := false
	got, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeFailed, func(s *envelope.Snapshot) error {
		called = true
		s.Status = envelope.StatusFailed
		return nil
	})
	if !errors.Is(err, ErrTerminal) {
		t.Fatalf("Apply on terminal = %v, want ErrTerminal", err)
	}
	if called {
		t.Error("mutate was called on a terminal job")
	}
	if got.Status != envelope.StatusSucceeded || got.Seq != done.Seq {
		t.Errorf("Apply returned %+v, want the stored terminal snapshot", got)
	}
	_, rev2, err := f.store.Get(ctx, j.ID)
	if err != nil || rev2 != rev {
		t.Errorf("KV revision %d → %d (%v): terminal snapshot was rewritten", rev, rev2, err)
	}
	if after := f.eventCount(t, j.ID); after != before {
		t.Errorf("events %d → %d: something was published", before, after)
	}
}

func TestCancelledCannotSucceed(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-c")
	if _, err := f.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeStarted, start); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeCancelled, setStatus(envelope.StatusCancelled)); err != nil {
		t.Fatal(err)
	}
	got, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeSucceeded, setStatus(envelope.StatusSucceeded))
	if !errors.Is(err, ErrTerminal) || got.Status != envelope.StatusCancelled {
		t.Fatalf("succeed after cancel = %+v, %v; want cancelled + ErrTerminal", got, err)
	}
	stored, _, err := f.store.Get(ctx, j.ID)
	if err != nil || stored.Status != envelope.StatusCancelled || stored.Seq != 2 {
		t.Fatalf("stored = %+v, %v", stored, err)
	}
}

func TestMutateErrorWritesNothing(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-m")
	if _, err := f.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeStarted, func(*envelope.Snapshot) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Apply = %v, want boom", err)
	}
	s, rev, err := f.store.Get(ctx, j.ID)
	if err != nil || s.Seq != 0 || rev != 1 {
		t.Fatalf("after failed mutate: %+v rev %d %v", s, rev, err)
	}
}

// A change that would produce an invalid snapshot or an impossible event is
// refused before the compare-and-set: storing it would leave a snapshot that
// no one can read back (Get validates) and an event that was never sent.
func TestInvalidChangeWritesNothing(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-v")
	if _, err := f.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		typ    envelope.Type
		mutate Mutation
		want   error
	}{
		{"progress 150", envelope.TypeProgress, func(s *envelope.Snapshot) error { s.Progress = 150; return nil }, envelope.ErrMalformed},
		{"unknown status", envelope.TypeStarted, setStatus("exploded"), envelope.ErrMalformed},
		{"submitted as event", envelope.TypeSubmitted, start, envelope.ErrUnknownType},
		{"result not JSON", envelope.TypeSucceeded, func(s *envelope.Snapshot) error { s.Result = json.RawMessage(`{`); return nil }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.store.Apply(ctx, j.ID, nil, tc.typ, tc.mutate)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Apply = %v, want %v", err, tc.want)
			}
			s, rev, err := f.store.Get(ctx, j.ID)
			if err != nil {
				t.Fatalf("job unreadable after a refused change: %v", err)
			}
			if s.Seq != 0 || rev != 1 || s.Status != envelope.StatusQueued {
				t.Fatalf("refused change was stored: %+v rev %d", s, rev)
			}
			if n := f.eventCount(t, j.ID); n != 0 {
				t.Fatalf("%d events published", n)
			}
		})
	}
	// And the job still moves on normally.
	if got, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeStarted, start); err != nil || got.Seq != 1 {
		t.Fatalf("Apply after refusals = %+v, %v", got, err)
	}
}

func TestPublishIsIdempotent(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-p")
	if _, err := f.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	snap, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeStarted, start)
	if err != nil {
		t.Fatal(err)
	}
	// A crash between the KV write and the publish is repaired by
	// re-publishing the stored snapshot; doing it twice more is harmless.
	for range 2 {
		if err := f.store.Publish(ctx, EventTypeOf(snap), snap); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.eventCount(t, j.ID); n != 1 {
		t.Fatalf("EVENTS holds %d messages for the job, want 1", n)
	}
}

func TestEventTypeOf(t *testing.T) {
	for _, tc := range []struct {
		st   envelope.Status
		prog int
		want envelope.Type
	}{
		{envelope.StatusQueued, 0, envelope.TypeSubmitted},
		{envelope.StatusRunning, 0, envelope.TypeStarted},
		{envelope.StatusRunning, 30, envelope.TypeProgress},
		{envelope.StatusRetrying, 30, envelope.TypeRetrying},
		{envelope.StatusSucceeded, 100, envelope.TypeSucceeded},
		{envelope.StatusFailed, 0, envelope.TypeFailed},
		{envelope.StatusDead, 0, envelope.TypeDead},
		{envelope.StatusCancelled, 0, envelope.TypeCancelled},
	} {
		if got := EventTypeOf(envelope.Snapshot{Status: tc.st, Progress: tc.prog}); got != tc.want {
			t.Errorf("EventTypeOf(%s, %d) = %s, want %s", tc.st, tc.prog, got, tc.want)
		}
	}
}

func TestConcurrentApply(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-race")
	if _, err := f.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 10
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seqs []uint64
		errs []error
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				got, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeProgress, func(s *envelope.Snapshot) error {
					s.Status = envelope.StatusRunning
					s.Progress++ // a counter: a lost update would show as a smaller final value
					return nil
				})
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("worker %d: %w", w, err))
				} else {
					seqs = append(seqs, got.Seq)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	const total = workers * each
	sort.Slice(seqs, func(a, b int) bool { return seqs[a] < seqs[b] })
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("returned seqs are not 1..%d without repeats: %v", total, seqs)
		}
	}
	final, _, err := f.store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Seq != total || final.Progress != total {
		t.Fatalf("final = seq %d progress %d, want %d and %d (lost update)", final.Seq, final.Progress, total, total)
	}
	// Every seq was published exactly once, and in the order of the stream
	// the seqs and the progress counter only grow.
	evs := f.events(t, j.ID)
	if len(evs) != total {
		t.Fatalf("%d events, want %d", len(evs), total)
	}
	seen := map[uint64]bool{}
	for _, m := range evs {
		seq, ok := envelope.SeqOf(nats.Header(m.Header))
		if !ok || seen[seq] {
			t.Fatalf("seq %d (ok=%v) published twice or missing header", seq, ok)
		}
		seen[seq] = true
		_, s, err := envelope.DecodeEvent(m.Data)
		if err != nil || s.Seq != seq || s.Progress != int(seq) {
			t.Fatalf("event seq %d carries %+v (%v)", seq, s, err)
		}
	}
}

// isWrongRevision must recognise what nats-server answers to an update with
// a stale revision, or Apply gives up instead of retrying.
func TestIsWrongRevision(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	rev, err := f.kv.Create(ctx, "k", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.kv.Update(ctx, "k", []byte("2"), rev); err != nil {
		t.Fatal(err)
	}
	_, err = f.kv.Update(ctx, "k", []byte("3"), rev) // stale
	if err == nil {
		t.Fatal("stale update succeeded")
	}
	if !isWrongRevision(err) {
		t.Fatalf("isWrongRevision(%#v) = false for a stale revision (single server)", err)
	}
	// A replicated stream (R3) answers code 10164 instead of 10071; nats.go
	// wraps both with ErrKeyRevisionMismatch. Build the R3 shape the way
	// nats.go does, since a single server cannot produce it.
	r3 := fmt.Errorf("%w: %w", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Description: "wrong last sequence"}, jetstream.ErrKeyRevisionMismatch)
	if !isWrongRevision(r3) {
		t.Fatalf("isWrongRevision(R3 conflict) = false")
	}
	for _, other := range []error{errors.New("x"), context.DeadlineExceeded, jetstream.ErrKeyNotFound, nats.ErrTimeout} {
		if isWrongRevision(other) {
			t.Errorf("isWrongRevision(%v) = true", other)
		}
	}
}
