package jobstore

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// breakEvents makes EVENTS refuse every publish (max_msg_size 1) until the
// returned func restores its configuration. The stream stays readable.
func breakEvents(t *testing.T, js jetstream.JetStream) (restore func()) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, streams.Events)
	if err != nil {
		t.Fatal(err)
	}
	orig := st.CachedInfo().Config
	broken := orig
	broken.MaxMsgSize = 1
	if _, err := js.UpdateStream(ctx, broken); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := js.UpdateStream(ctx, orig); err != nil {
			t.Fatal(err)
		}
	}
}

// A change whose KV write succeeds and whose publish fails is reported as
// ErrNotPublished with the stored snapshot and revision, so the caller
// re-publishes instead of applying the change again.
func TestApplyAtNotPublishedCarriesStoredSnapshot(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-np")
	if _, err := f.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	cur, rev, err := f.store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	restore := breakEvents(t, f.js)
	snap, newRev, err := f.store.ApplyAt(ctx, cur, rev, envelope.TypeStarted, start)
	if !errors.Is(err, ErrNotPublished) {
		t.Fatalf("ApplyAt with EVENTS refusing: %v, want ErrNotPublished", err)
	}
	var npe *NotPublishedError
	if !errors.As(err, &npe) || npe.Snapshot.Seq != 1 || npe.Rev != newRev || npe.Err == nil {
		t.Fatalf("error %#v", err)
	}
	stored, storedRev, gerr := f.store.Get(ctx, j.ID)
	if gerr != nil || stored.Seq != 1 || storedRev != newRev || snap.Seq != 1 || snap.Status != envelope.StatusRunning {
		t.Fatalf("returned %+v rev %d; stored %+v rev %d, %v", snap, newRev, stored, storedRev, gerr)
	}
	// Apply reads it and must not store seq 2 over it while seq 1's event
	// cannot be published: nothing stored, ErrUnannounced.
	if _, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeProgress, func(s *envelope.Snapshot) error { s.Progress = 10; return nil }); !errors.Is(err, ErrUnannounced) || errors.Is(err, ErrNotPublished) {
		t.Fatalf("Apply over an unannounced change: %v, want ErrUnannounced", err)
	}
	if again, againRev, err := f.store.Get(ctx, j.ID); err != nil || again.Seq != 1 || againRev != newRev {
		t.Fatalf("after the refused Apply: %+v rev %d, %v", again, againRev, err)
	}
	restore()
	if err := f.store.Publish(ctx, envelope.TypeStarted, snap); err != nil {
		t.Fatal(err)
	}
	if n := f.eventCount(t, j.ID); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

// EnsurePublished publishes a stored snapshot's event only when EVENTS
// lacks it — also after the duplicate window, when a plain Publish would
// store it a second time.
func TestEnsurePublishedOnlyWhenMissing(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	j := newJob("job-ens")
	queued, err := f.store.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.EnsurePublished(ctx, queued); err != nil || f.eventCount(t, j.ID) != 0 {
		t.Fatalf("queued: %v, %d events", err, f.eventCount(t, j.ID))
	}
	restore := breakEvents(t, f.js)
	snap, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeStarted, start)
	if !errors.Is(err, ErrNotPublished) {
		t.Fatal(err)
	}
	if err := f.store.EnsurePublished(ctx, snap); err == nil {
		t.Fatal("EnsurePublished succeeded while EVENTS refuses publishes")
	}
	restore()
	if err := f.store.EnsurePublished(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if n := f.eventCount(t, j.ID); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}

	// The final event, stored without Nats-Msg-Id: as if it were published
	// longer ago than the duplicate window.
	restore = breakEvents(t, f.js)
	final, err := f.store.Apply(ctx, j.ID, nil, envelope.TypeCancelled, setStatus(envelope.StatusCancelled))
	if !errors.Is(err, ErrNotPublished) {
		t.Fatal(err)
	}
	restore()
	m, err := envelope.NewEventMsg(envelope.TypeCancelled, final, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Del(envelope.HeaderMsgID)
	if _, err := f.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := f.store.EnsurePublished(ctx, final); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.eventCount(t, j.ID); n != 2 {
		t.Fatalf("%d events, want 2 (started, cancelled)", n)
	}
}

func TestDeadLetteredMarker(t *testing.T) {
	f := setup(t)
	ctx := ctxT(t)
	if ok, err := f.store.DeadLettered(ctx, "job-dl"); ok || err != nil {
		t.Fatalf("before: %v, %v", ok, err)
	}
	if err := f.store.MarkDeadLettered(ctx, "job-dl", 7); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.store.DeadLettered(ctx, "job-dl"); !ok || err != nil {
		t.Fatalf("after: %v, %v", ok, err)
	}
	// The marker is no job: a Get of the job id still finds nothing.
	if _, _, err := f.store.Get(ctx, "job-dl"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get: %v", err)
	}
}
