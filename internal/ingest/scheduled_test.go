package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// firstEventTime is the time of the job's first event in EVENTS (its
// start), zero while it has none.
func (h *harness) firstEventTime(snap envelope.Snapshot) time.Time {
	h.t.Helper()
	st, err := h.js.Stream(context.Background(), streams.Events)
	if err != nil {
		h.t.Fatal(err)
	}
	m, err := st.GetMsg(context.Background(), 0, jetstream.WithGetMsgSubject(envelope.EventSubject(snap.User, snap.ID)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}
	}
	if err != nil {
		h.t.Fatal(err)
	}
	_, ev, err := envelope.DecodeEvent(m.Data)
	if err != nil {
		h.t.Fatal(err)
	}
	return ev.UpdatedAt
}

func (h *harness) getSnap(tok, id string) envelope.Snapshot {
	h.t.Helper()
	r := h.do(http.MethodGet, "/v1/jobs/"+id, nil, bearer(tok))
	if r.Status != http.StatusOK {
		h.t.Fatalf("GET %s: %d %s", id, r.Status, r.Body)
	}
	return r.snapshot(h.t)
}

// TestScheduledJobRunsWhenDue: a job with delay_ms or run_at is scheduled
// (GET says so, with its run_at; nothing is queued) until it is due, then
// runs — not before its time, and soon after it (the delay is logged).
// A run_at in the past runs now.
func TestScheduledJobRunsWhenDue(t *testing.T) {
	h := newHarness(t, nil)
	h.startProcessor()
	alice := token(t, "alice")
	sim := `"input":{"sim":{"duration_ms":50}}`
	runAt := time.Now().Add(2 * time.Second).UTC().Truncate(time.Millisecond)
	subs := []envelope.Snapshot{
		h.submit(alice, `{"kind":"image","delay_ms":1500,`+sim+`}`).snapshot(t),
		h.submit(alice, `{"kind":"image","run_at":"`+runAt.Format(time.RFC3339Nano)+`",`+sim+`}`).snapshot(t),
	}
	b := h.batch(alice, `{"jobs":[{"kind":"video","delay_ms":1800,`+sim+`},{"kind":"image",`+sim+`}]}`).batchAnswer(t)
	subs = append(subs, *b.Jobs[0].Job)
	if !subs[1].RunAt.Equal(runAt) {
		t.Fatalf("run_at %v, want %v", subs[1].RunAt, runAt)
	}
	for _, s := range subs {
		if s.Status != envelope.StatusScheduled || s.RunAt == nil {
			t.Fatalf("accepted %+v, want scheduled with run_at", s)
		}
		if g := h.getSnap(alice, s.ID); g.Status != envelope.StatusScheduled || !g.RunAt.Equal(*s.RunAt) {
			t.Fatalf("GET of a scheduled job: %+v", g)
		}
	}
	// Scheduled jobs are listed as scheduled.
	if got := h.listAll(alice, map[string][]string{"status": {"scheduled"}}); len(got) != 3 {
		t.Fatalf("%d scheduled jobs listed, want 3", len(got))
	}
	past := h.submit(alice, `{"kind":"image","run_at":"2001-02-03T04:05:06Z",`+sim+`}`).snapshot(t)
	if past.Status != envelope.StatusQueued || past.RunAt != nil {
		t.Fatalf("a run_at in the past: %+v, want queued now", past)
	}
	subs = append(subs, past)
	for _, s := range subs {
		testutil.WaitFor(t, 15*time.Second, func() bool {
			return h.getSnap(alice, s.ID).Status == envelope.StatusSucceeded
		}, "job ", s.ID, " did not succeed")
		started := h.firstEventTime(s)
		if s.RunAt == nil {
			continue
		}
		late := started.Sub(*s.RunAt)
		t.Logf("job due at %s started %v after its time", s.RunAt.Format(time.RFC3339Nano), late)
		if late < 0 {
			t.Errorf("job %s started %v before its run_at", s.ID, -late)
		}
		if late > 10*time.Second {
			t.Errorf("job %s started %v after its run_at", s.ID, late)
		}
	}
}

// TestScheduledJobCancelled: a scheduled job cancelled before it is due
// ends cancelled and never runs; its schedule is removed. Even when the
// schedule fires anyway (cancelled straight in the store, schedule left in
// place), the processor does not run it.
func TestScheduledJobCancelled(t *testing.T) {
	h := newHarness(t, nil)
	h.startProcessor()
	alice := token(t, "alice")
	a := h.submit(alice, `{"kind":"image","delay_ms":1000}`).snapshot(t)
	bSnap := h.submit(alice, `{"kind":"image","delay_ms":1000}`).snapshot(t)

	c := h.do(http.MethodDelete, "/v1/jobs/"+a.ID, nil, bearer(alice))
	if c.Status != http.StatusOK || c.snapshot(t).Status != envelope.StatusCancelled {
		t.Fatalf("cancel: %d %s", c.Status, c.Body)
	}
	// b is cancelled the way a cancel that raced the schedule would be:
	// stored, schedule not removed.
	ctx := context.Background()
	if _, _, err := h.store.ApplyAt(ctx, bSnap, jobstore.RevAbsent, envelope.TypeCancelled, func(s *envelope.Snapshot) error {
		s.Status = envelope.StatusCancelled
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st, err := h.js.Stream(ctx, streams.Scheduled)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, envelope.ScheduleSubject(a.ID)); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the cancelled job's schedule is still there: %v", err)
	}
	// b fires and reaches JOBS; the processor settles it without running.
	jobs, err := h.js.Stream(ctx, streams.Jobs)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		info, err := jobs.Info(ctx)
		return err == nil && info.State.FirstSeq > 1 // b came and was settled
	}, "the fired job never reached JOBS or was never settled")
	time.Sleep(time.Second) // a's time has passed too
	for _, s := range []envelope.Snapshot{a, bSnap} {
		g := h.getSnap(alice, s.ID)
		if g.Status != envelope.StatusCancelled || g.Attempt != 0 {
			t.Fatalf("job %s: %+v, want cancelled and never run", s.ID, g)
		}
	}
	if n := h.jobsCount(); n != 0 {
		t.Fatalf("JOBS holds %d messages", n)
	}
}

// TestScheduleBadInput: bad run_at / delay_ms are JSON 400s that store
// nothing, alone and as batch items.
func TestScheduleBadInput(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	for _, body := range []string{
		`{"kind":"image","run_at":"tomorrow"}`,
		`{"kind":"image","run_at":"` + time.Now().Add(MaxScheduleAhead+time.Hour).UTC().Format(time.RFC3339) + `"}`,
		`{"kind":"image","delay_ms":` + fmt.Sprint(MaxScheduleAhead.Milliseconds()+1) + `}`,
		`{"kind":"image","delay_ms":-1}`,
		`{"kind":"image","delay_ms":10,"run_at":"2030-01-01T00:00:00Z"}`,
	} {
		r := h.submit(alice, body)
		if r.Status != http.StatusBadRequest || r.errorCode(t) != CodeInvalidSchedule {
			t.Errorf("%s: %d %s", body, r.Status, r.Body)
		}
		it := h.batch(alice, `{"jobs":[`+body+`]}`).batchAnswer(t).Jobs[0]
		if it.Status != http.StatusBadRequest || it.Error.Code != CodeInvalidSchedule {
			t.Errorf("batch item %s: %+v", body, it)
		}
	}
	if n := h.jobsCount() + h.streamMsgs(streams.Scheduled); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}
