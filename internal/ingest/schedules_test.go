package ingest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
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
