package ingest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// TestScheduleFiresOneJobPerFiring: an @every schedule makes one job of
// its owner per firing (distinct ids, the job's kind and input), is listed
// by its owner only, and stops firing once deleted.
func TestScheduleFiresOneJobPerFiring(t *testing.T) {
	h := newHarness(t, nil)
	alice, bob := token(t, "alice"), token(t, "bob")
	r := h.do(http.MethodPost, "/v1/schedules", []byte(`{"name":"tick","every":"1s","job":{"kind":"video","priority":"low","input":{"n":1}}}`), bearer(alice))
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	created := time.Now()
	var ids []string
	testutil.WaitFor(t, 15*time.Second, func() bool {
		ids = h.listAll(alice, url.Values{"kind": {"video"}})
		return len(ids) >= 3
	}, "the schedule did not fire three times")
	fired := time.Since(created)
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("job %s listed twice", id)
		}
		seen[id] = true
		g := h.getSnap(alice, id)
		if g.User != "alice" || g.Kind != "video" || g.Priority != "low" {
			t.Fatalf("fired job %+v", g)
		}
	}
	// One job per firing: no more jobs than seconds elapsed (+1).
	if max := int(fired/time.Second) + 2; len(ids) > max {
		t.Fatalf("%d jobs in %v: more than one per firing", len(ids), fired)
	}
	t.Logf("%d jobs in %v", len(ids), fired)

	lr := h.do(http.MethodGet, "/v1/schedules", nil, bearer(alice))
	var l scheduleList
	if err := json.Unmarshal(lr.Body, &l); err != nil || len(l.Schedules) != 1 || l.Schedules[0].Name != "tick" || l.Schedules[0].Every != "1s" {
		t.Fatalf("list: %d %s", lr.Status, lr.Body)
	}
	if lr := h.do(http.MethodGet, "/v1/schedules", nil, bearer(bob)); lr.Status != http.StatusOK || json.Unmarshal(lr.Body, &l) != nil || len(l.Schedules) != 0 {
		t.Fatalf("bob lists %s", lr.Body)
	}
	if r := h.do(http.MethodDelete, "/v1/schedules/tick", nil, bearer(bob)); r.Status != http.StatusNotFound || r.errorCode(t) != CodeNotFound {
		t.Fatalf("bob deletes alice's schedule: %d %s", r.Status, r.Body)
	}
	if r := h.do(http.MethodGet, "/v1/schedules?user=alice", nil, bearer(bob)); r.Status != http.StatusForbidden {
		t.Fatalf("bob names alice: %d %s", r.Status, r.Body)
	}
	if r := h.do(http.MethodDelete, "/v1/schedules/tick", nil, bearer(alice)); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	time.Sleep(1500 * time.Millisecond) // a firing in flight lands
	n := len(h.listAll(alice, url.Values{"kind": {"video"}}))
	time.Sleep(2500 * time.Millisecond)
	if m := len(h.listAll(alice, url.Values{"kind": {"video"}})); m != n {
		t.Fatalf("the deleted schedule fired again: %d jobs, then %d", n, m)
	}
	if r := h.do(http.MethodDelete, "/v1/schedules/tick", nil, bearer(alice)); r.Status != http.StatusNotFound {
		t.Fatalf("delete again: %d %s", r.Status, r.Body)
	}
}

// TestScheduleBadInput: every bad schedule is a JSON 400 with a code and
// stores nothing.
func TestScheduleRequestRefused(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	job := `"job":{"kind":"image"}`
	for body, code := range map[string]string{
		`{"name":"a.b","every":"1s",` + job + `}`:                                  CodeInvalidName,
		`{"name":"a*","every":"1s",` + job + `}`:                                   CodeInvalidName,
		`{"name":"","every":"1s",` + job + `}`:                                     CodeInvalidName,
		`{"name":"x","cron":"61 * * * * *",` + job + `}`:                           CodeInvalidCron,
		`{"name":"x","cron":"* * * * *",` + job + `}`:                              CodeInvalidCron,
		`{"name":"x","cron":"0 * * * * *","every":"1s",` + job + `}`:               CodeInvalidCron,
		`{"name":"x",` + job + `}`:                                                 CodeInvalidCron,
		`{"name":"x","every":"100ms",` + job + `}`:                                 CodeInvalidCron,
		`{"name":"x","cron":"0 * * * * *","time_zone":"Mars/Olympus",` + job + `}`: CodeInvalidCron,
		`{"name":"x","every":"1s","job":{"kind":"audio"}}`:                         CodeUnknownKind,
		`{"name":"x","every":"1s","job":{"kind":"image","delay_ms":5}}`:            CodeInvalidSchedule,
		`{"name":"x","every":"1s"}`:                                                CodeInvalidJSON,
		`{"name":"x","every":"1s",` + job + `,"extra":1}`:                          CodeInvalidJSON,
	} {
		r := h.do(http.MethodPost, "/v1/schedules", []byte(body), bearer(alice))
		if r.Status != http.StatusBadRequest || r.errorCode(t) != code {
			t.Errorf("%s: %d %s, want 400 %s", body, r.Status, r.Body, code)
		}
	}
	if n := h.streamMsgs("SCHEDULED"); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
	// A good cron with a zone is taken.
	r := h.do(http.MethodPost, "/v1/schedules", []byte(`{"name":"nightly","cron":"0 0 3 * * *","time_zone":"Europe/Paris",`+job+`}`), bearer(alice))
	if r.Status != http.StatusCreated {
		t.Fatalf("good cron: %d %s", r.Status, r.Body)
	}
}

// TestScheduleEverySecondFiringIdentity: an "every 1s" schedule fires for
// several seconds; every firing the server stored becomes exactly one job
// (N firings, N distinct jobs: none merged, none doubled, however the fire
// lag falls around the half second), and each firing delivered again makes
// no second job.
func TestScheduleEverySecondFiringIdentity(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	if r := h.do(http.MethodPost, "/v1/schedules", []byte(`{"name":"sec","every":"1s","job":{"kind":"video"}}`), bearer(alice)); r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	testutil.WaitFor(t, 20*time.Second, func() bool {
		return len(h.listAll(alice, url.Values{"kind": {"video"}})) >= 6
	}, "the schedule did not fire six times")
	if r := h.do(http.MethodDelete, "/v1/schedules/sec", nil, bearer(alice)); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	time.Sleep(1500 * time.Millisecond) // a firing in flight lands

	ctx := context.Background()
	subject := envelope.CronFireSubject("alice", "sec")
	st, err := h.js.Stream(ctx, streams.Scheduled)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	fired := int(info.State.Subjects[subject])
	var ids []string
	testutil.WaitFor(t, 10*time.Second, func() bool {
		ids = h.listAll(alice, url.Values{"kind": {"video"}})
		return len(ids) >= fired
	}, "fewer jobs than firings")
	distinct := map[string]bool{}
	for _, id := range ids {
		distinct[id] = true
	}
	if len(ids) != fired || len(distinct) != fired {
		t.Fatalf("%d firings stored, %d jobs listed (%d distinct): want one job per firing", fired, len(ids), len(distinct))
	}
	t.Logf("%d firings, %d jobs", fired, len(ids))

	// Every stored firing delivered again (as after a lost ack, or to a
	// second ingest): the same jobs, no new one.
	c, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(fired, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		if m.Headers().Get(envelope.HeaderScheduleNext) == "" {
			t.Errorf("firing without %s: %v", envelope.HeaderScheduleNext, m.Headers())
		}
		h.svc.fire(ctx, m)
		n++
	}
	if n != fired {
		t.Fatalf("redelivered %d of %d firings", n, fired)
	}
	if again := h.listAll(alice, url.Values{"kind": {"video"}}); len(again) != fired {
		t.Fatalf("after redelivering every firing: %d jobs, want %d", len(again), fired)
	}
}
