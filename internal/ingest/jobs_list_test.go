package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

func (h *harness) list(tok string, q url.Values) (response, listResponse) {
	h.t.Helper()
	r := h.do(http.MethodGet, "/v1/jobs?"+q.Encode(), nil, bearer(tok))
	var lr listResponse
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &lr); err != nil {
			h.t.Fatalf("list answer: %v in %s", err, r.Body)
		}
	}
	return r, lr
}

// listAll follows next_cursor to the end and returns the ids in order.
func (h *harness) listAll(tok string, q url.Values) []string {
	h.t.Helper()
	ids, _ := h.listPages(tok, q)
	return ids
}

// putSucceeded writes a succeeded snapshot of each of user's ids (image
// jobs), as the processor would, straight into job_status.
func (h *harness) putSucceeded(ctx context.Context, user string, ids []string) {
	h.t.Helper()
	kv, err := h.js.KeyValue(ctx, streams.JobStatus)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, id := range ids {
		snap := envelope.NewSnapshot(envelope.Job{ID: id, User: user, Kind: "image", Priority: envelope.PriorityNormal, CreatedAt: time.Now().UTC()})
		snap.Status, snap.Seq = envelope.StatusSucceeded, 1
		b, _ := snap.Marshal()
		if _, err := kv.Put(ctx, id, b); err != nil {
			h.t.Fatal(err)
		}
	}
}

// submitN submits n jobs of kind for tok through one batch and returns
// their ids in submission order.
func (h *harness) submitN(tok, kind string, n int) []string {
	h.t.Helper()
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`{"kind":%q,"input":{"n":%d}}`, kind, i)
	}
	b := h.batch(tok, `{"jobs":[`+strings.Join(items, ",")+`]}`).batchAnswer(h.t)
	ids := make([]string, n)
	for i, it := range b.Jobs {
		if it.Job == nil {
			h.t.Fatalf("item %d refused: %+v", i, it.Error)
		}
		ids[i] = it.Job.ID
	}
	return ids
}

func reversed(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[len(ids)-1-i] = id
	}
	return out
}

func sameIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s:\n got %d %v\nwant %d %v", what, len(got), got, len(want), want)
	}
}

// TestListNewestFirst: a user's jobs, interleaved with another user's,
// come back newest first over pages of every size, each once, filtered by
// kind and by current status; another user's list is forbidden except to
// an admin.
func TestListNewestFirst(t *testing.T) {
	h := newHarness(t, nil)
	alice, bob := token(t, "alice"), token(t, "bob")
	var aliceAll, aliceImages []string
	for round := range 4 {
		imgs := h.submitN(alice, "image", 7)
		h.submitN(bob, "image", 11)
		vids := h.submitN(alice, "video", 3)
		aliceAll = append(aliceAll, imgs...)
		aliceAll = append(aliceAll, vids...)
		aliceImages = append(aliceImages, imgs...)
		// A single submission is listed too.
		r := h.submit(alice, fmt.Sprintf(`{"kind":"image","input":{"round":%d}}`, round))
		if r.Status != http.StatusAccepted {
			t.Fatalf("submit: %d %s", r.Status, r.Body)
		}
		aliceAll = append(aliceAll, r.snapshot(t).ID)
		aliceImages = append(aliceImages, r.snapshot(t).ID)
	}
	for _, limit := range []int{1, 3, 10, 44, 500} {
		got := h.listAll(alice, url.Values{"limit": {fmt.Sprint(limit)}})
		sameIDs(t, fmt.Sprintf("alice's jobs, limit %d", limit), got, reversed(aliceAll))
	}
	sameIDs(t, "alice's images", h.listAll(alice, url.Values{"kind": {"image"}, "limit": {"5"}}), reversed(aliceImages))
	if got := h.listAll(alice, url.Values{"kind": {"audio"}}); len(got) != 0 {
		t.Fatalf("a kind alice never submitted lists %v", got)
	}

	// A first page shorter than the list has a cursor.
	r, lr := h.list(alice, url.Values{"limit": {"40"}})
	if r.Status != http.StatusOK || len(lr.Jobs) != 40 || lr.NextCursor == "" || lr.Jobs[0].ID != aliceAll[len(aliceAll)-1] {
		t.Fatalf("first page: %d, %d jobs, cursor %q", r.Status, len(lr.Jobs), lr.NextCursor)
	}
	if lr.Jobs[0].Status != envelope.StatusQueued || lr.Jobs[0].User != "alice" {
		t.Fatalf("a queued job lists as %+v", lr.Jobs[0])
	}

	// status= is the status now: cancel three, list them.
	var cancelled []string
	for _, i := range []int{2, 9, 30} {
		id := aliceAll[i]
		if c := h.do(http.MethodDelete, "/v1/jobs/"+id, nil, bearer(alice)); c.Status != http.StatusOK {
			t.Fatalf("cancel: %d %s", c.Status, c.Body)
		}
		cancelled = append(cancelled, id)
	}
	sameIDs(t, "cancelled", h.listAll(alice, url.Values{"status": {"cancelled"}, "limit": {"2"}}), reversed(cancelled))
	queued := h.listAll(alice, url.Values{"status": {"queued"}})
	if len(queued) != len(aliceAll)-3 {
		t.Fatalf("%d queued, want %d", len(queued), len(aliceAll)-3)
	}

	// bob sees only his own; alice cannot name bob; an admin can.
	if got := h.listAll(bob, url.Values{}); len(got) != 44 {
		t.Fatalf("bob lists %d jobs, want 44", len(got))
	}
	if r, _ := h.list(alice, url.Values{"user": {"bob"}}); r.Status != http.StatusForbidden || r.errorCode(t) != CodeForbidden {
		t.Fatalf("alice listing bob's jobs: %d %s", r.Status, r.Body)
	}
	if got := h.listAll(adminToken(t, "ops"), url.Values{"user": {"alice"}, "limit": {"7"}}); len(got) != len(aliceAll) {
		t.Fatalf("admin lists %d of alice's jobs, want %d", len(got), len(aliceAll))
	}
	if r, lr := h.list(token(t, "carol"), url.Values{}); r.Status != http.StatusOK || len(lr.Jobs) != 0 || lr.NextCursor != "" {
		t.Fatalf("a user without jobs: %d %s", r.Status, r.Body)
	}
}

// TestListBadQuery: every bad query parameter is a JSON 400 with a code.
func TestListBadQuery(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	for _, c := range []struct {
		q    string
		code string
	}{
		{"limit=0", CodeInvalidQuery},
		{"limit=501", CodeInvalidQuery},
		{"limit=x", CodeInvalidQuery},
		{"status=sleeping", CodeInvalidQuery},
		{"kind=A.B", CodeInvalidKind},
		{"cursor=abc", CodeInvalidCursor},
		{"cursor=-1", CodeInvalidCursor},
		{"user=a.b", CodeInvalidQuery},
		{"limit=1&limit=2", CodeInvalidQuery},
		{"sort=asc", CodeInvalidQuery},
	} {
		r := h.do(http.MethodGet, "/v1/jobs?"+c.q, nil, bearer(alice))
		if r.Status != http.StatusBadRequest || r.errorCode(t) != c.code {
			t.Errorf("%s: %d %s, want 400 %s", c.q, r.Status, r.Body, c.code)
		}
	}
	if r := h.do(http.MethodGet, "/v1/jobs", nil); r.Status != http.StatusUnauthorized || r.errorCode(t) != CodeUnauthorized {
		t.Errorf("no token: %d %s", r.Status, r.Body)
	}
}

// TestListManyJobs: a user with many jobs among many more of others pages
// in a few direct gets; the log shows how long a page took.
func TestListManyJobs(t *testing.T) {
	h := newHarness(t, nil)
	const mine, others = 20000, 60000
	ctx := context.Background()
	// Index entries written straight to JOBINDEX (as ingest writes them),
	// with a snapshot for the newest of alice's: enough to measure the
	// index read without submitting 80,000 jobs.
	var aliceIDs []string
	for i := range mine + others {
		user := "other"
		if i%4 == 0 {
			user = "alice"
		}
		id := fmt.Sprintf("j%07d", i)
		job := envelope.Job{ID: id, User: user, Kind: "image", Priority: envelope.PriorityNormal, CreatedAt: time.Now().UTC()}
		if _, err := h.js.PublishMsgAsync(indexMsg(job, []byte(id)), jetstream.WithExpectStream(streams.JobIndex)); err != nil {
			t.Fatal(err)
		}
		if user == "alice" {
			aliceIDs = append(aliceIDs, id)
		}
		if i%1000 == 999 || i == mine+others-1 {
			select {
			case <-h.js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatal("index entries not acknowledged")
			}
		}
	}
	h.putSucceeded(ctx, "alice", aliceIDs[len(aliceIDs)-120:])
	alice := token(t, "alice")
	var cursor string
	for page := range 4 {
		if page == 2 {
			cursor = "" // the first page again, warm
		}
		q := url.Values{"limit": {"50"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		start := time.Now()
		r, lr := h.list(alice, q)
		t.Logf("page %d of a user with %d jobs among %d: %v", page, mine, mine+others, time.Since(start))
		if r.Status != http.StatusOK || len(lr.Jobs) != 50 {
			t.Fatalf("page %d: %d, %d jobs", page, r.Status, len(lr.Jobs))
		}
		for i, j := range lr.Jobs {
			if want := aliceIDs[len(aliceIDs)-1-(page%2)*50-i]; j.ID != want {
				t.Fatalf("page %d item %d is %s, want %s", page, i, j.ID, want)
			}
		}
		cursor = lr.NextCursor
	}
}
