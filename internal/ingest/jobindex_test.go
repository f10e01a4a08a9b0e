package ingest

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// batchIDs posts one batch and returns the accepted ids in item order
// ("" for a refused item).
func (h *harness) batchIDs(tok string, items []string) ([]string, batchResponse) {
	h.t.Helper()
	b := h.batch(tok, `{"jobs":[`+strings.Join(items, ",")+`]}`).batchAnswer(h.t)
	ids := make([]string, len(items))
	for i, it := range b.Jobs {
		if it.Job != nil {
			ids[i] = it.Job.ID
		}
	}
	return ids, b
}

// listPages follows next_cursor to the end and returns the ids in order
// and the cursors given.
func (h *harness) listPages(tok string, q url.Values) (ids, cursors []string) {
	h.t.Helper()
	for range 1000 {
		r, lr := h.list(tok, q)
		if r.Status != http.StatusOK {
			h.t.Fatalf("list %v: %d %s", q, r.Status, r.Body)
		}
		for _, j := range lr.Jobs {
			ids = append(ids, j.ID)
		}
		if lr.NextCursor == "" {
			return ids, cursors
		}
		cursors = append(cursors, lr.NextCursor)
		q.Set("cursor", lr.NextCursor)
	}
	h.t.Fatal("list: more than 1000 pages")
	return nil, nil
}

func noDuplicates(t *testing.T, what string, ids []string) {
	t.Helper()
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("%s: job %s listed twice", what, id)
		}
		seen[id] = true
	}
}

func sameSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("%s: got %d jobs, want %d\n got %v\nwant %v", what, len(g), len(w), g, w)
	}
}

// TestListBundles: a batch's jobs share index entries (a bundle per
// (user, kind) and chunk), and the list still shows every job once,
// newest first, across pages of odd sizes that end inside bundles, mixed
// with single submissions and keyed items (entries of their own), with
// kind= and status= filters; an old-format cursor (a plain seq) still
// reads below its entry.
func TestListBundles(t *testing.T) {
	// A queued job has no snapshot yet: the list reads its JOBS message,
	// one lookup per job, which for pages of 500 under -race on a loaded
	// machine can take longer than the default 2 s.
	h := newHarness(t, func(c *Config) { c.RequestTimeout = 15 * time.Second })
	alice, bob := token(t, "alice"), token(t, "bob")
	single := func(n int) string {
		r := h.submit(alice, fmt.Sprintf(`{"kind":"image","input":{"single":%d}}`, n))
		if r.Status != http.StatusAccepted {
			t.Fatalf("submit: %d %s", r.Status, r.Body)
		}
		return r.snapshot(t).ID
	}
	s1, s2 := single(1), single(2)
	items := make([]string, 1000)
	for i := range items {
		items[i] = fmt.Sprintf(`{"kind":"image","input":{"a":%d}}`, i)
	}
	a, _ := h.batchIDs(alice, items)
	h.submitN(bob, "image", 150) // another user's bundles in between
	s3 := single(3)
	// B: image and video alternating, every tenth item keyed.
	items = make([]string, 250)
	var bVideo []string
	for i := range items {
		kind := []string{"image", "video"}[i%2]
		key := ""
		if i%10 == 0 {
			key = fmt.Sprintf(`"idempotency_key":"b-%d",`, i)
		}
		items[i] = fmt.Sprintf(`{"kind":%q,%s"input":{"b":%d}}`, kind, key, i)
	}
	b, bAns := h.batchIDs(alice, items)
	for i, id := range b {
		if id == "" {
			t.Fatalf("item %d of B refused: %+v", i, bAns.Jobs[i].Error)
		}
		if i%2 == 1 {
			bVideo = append(bVideo, id)
		}
	}
	s4 := single(4)

	// Far fewer entries than jobs: A is 10 bundles, B 25 keyed singles and
	// 2 bundles per kind, bob 2 bundles, and the 4 singles.
	if n := h.streamMsgs(streams.JobIndex); n > 4+10+2+25+4 {
		t.Fatalf("JOBINDEX holds %d entries for 1,404 jobs: not bundled", n)
	}

	// The whole list: s4, B (in its index order), s3, A newest first, s2, s1.
	check := func(what string, got []string) {
		t.Helper()
		noDuplicates(t, what, got)
		if len(got) != 1254 {
			t.Fatalf("%s: %d jobs, want 1254", what, len(got))
		}
		if got[0] != s4 || got[251] != s3 || got[1252] != s2 || got[1253] != s1 {
			t.Fatalf("%s: singles out of place: %v %v %v %v", what, got[0], got[251], got[1252], got[1253])
		}
		sameSet(t, what+", batch B", got[1:251], b)
		sameIDs(t, what+", batch A", got[252:1252], reversed(a))
	}
	midBundle := 0
	for _, limit := range []int{7, 33, 128, 499} {
		ids, cursors := h.listPages(alice, url.Values{"limit": {fmt.Sprint(limit)}})
		check(fmt.Sprintf("limit %d", limit), ids)
		for _, c := range cursors {
			if strings.Contains(c, ".") {
				midBundle++
			}
		}
	}
	if midBundle == 0 {
		t.Fatal("no page ended inside a bundle")
	}
	// The admin's view is the same.
	check("admin", h.listAll(adminToken(t, "ops"), url.Values{"user": {"alice"}, "limit": {"97"}}))

	// A page ending on a single entry has a plain seq as its cursor (the
	// format single entries always had): the next page starts below it.
	r, lr := h.list(alice, url.Values{"limit": {"252"}})
	if r.Status != http.StatusOK || lr.Jobs[251].ID != s3 || strings.Contains(lr.NextCursor, ".") {
		t.Fatalf("page ending at s3: %d, cursor %q", r.Status, lr.NextCursor)
	}
	r, lr = h.list(alice, url.Values{"limit": {"3"}, "cursor": {lr.NextCursor}})
	if r.Status != http.StatusOK || len(lr.Jobs) != 3 || lr.Jobs[0].ID != a[999] || lr.Jobs[2].ID != a[997] {
		t.Fatalf("below s3: %d %s", r.Status, r.Body)
	}
	// A page ending mid-bundle and resumed from its cursor.
	r, lr = h.list(alice, url.Values{"limit": {"300"}})
	if r.Status != http.StatusOK || !strings.Contains(lr.NextCursor, ".") || lr.Jobs[299].ID != a[952] {
		t.Fatalf("page ending in A: %d, cursor %q", r.Status, lr.NextCursor)
	}
	r, lr = h.list(alice, url.Values{"limit": {"2"}, "cursor": {lr.NextCursor}})
	if r.Status != http.StatusOK || len(lr.Jobs) != 2 || lr.Jobs[0].ID != a[951] || lr.Jobs[1].ID != a[950] {
		t.Fatalf("resumed mid-bundle: %d %s", r.Status, r.Body)
	}

	// kind=: B's video jobs only.
	videos := h.listAll(alice, url.Values{"kind": {"video"}, "limit": {"11"}})
	noDuplicates(t, "videos", videos)
	sameSet(t, "videos", videos, bVideo)

	// status= across bundles: cancel jobs spread over A's bundles and B.
	cancelled := []string{b[3], a[999], a[420], a[150], a[5]} // newest first
	for _, id := range cancelled {
		if c := h.do(http.MethodDelete, "/v1/jobs/"+id, nil, bearer(alice)); c.Status != http.StatusOK {
			t.Fatalf("cancel: %d %s", c.Status, c.Body)
		}
	}
	sameIDs(t, "cancelled", h.listAll(alice, url.Values{"status": {"cancelled"}, "limit": {"2"}}), cancelled)
	queued := h.listAll(alice, url.Values{"status": {"queued"}, "limit": {"500"}})
	noDuplicates(t, "queued", queued)
	if len(queued) != 1254-len(cancelled) {
		t.Fatalf("%d queued, want %d", len(queued), 1254-len(cancelled))
	}
}

// TestListBundleRefusedJob: a bundle names every unkeyed job of its chunk,
// published right behind them; the jobs JOBS then refused are not listed.
func TestListBundleRefusedJob(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	st, err := h.js.Stream(ctx, streams.Jobs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgs, cfg.Discard = 6, jetstream.DiscardNew // JOBS takes 6 jobs, then refuses
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	alice := token(t, "alice")
	items := make([]string, 10)
	for i := range items {
		items[i] = fmt.Sprintf(`{"kind":"image","input":{"n":%d}}`, i)
	}
	ids, ans := h.batchIDs(alice, items)
	if ans.Accepted != 6 || ans.Refused != 4 {
		t.Fatalf("%d accepted, %d refused; want 6 and 4", ans.Accepted, ans.Refused)
	}
	var accepted []string
	for _, id := range ids {
		if id != "" {
			accepted = append(accepted, id)
		}
	}
	if n := h.streamMsgs(streams.JobIndex); n != 1 {
		t.Fatalf("JOBINDEX holds %d entries, want one bundle", n)
	}
	for _, limit := range []int{1, 4, 50} {
		sameIDs(t, fmt.Sprintf("limit %d", limit), h.listAll(alice, url.Values{"limit": {fmt.Sprint(limit)}}), reversed(accepted))
	}
}

// TestRerunFromBundle: a job of a batch (its envelope inside a bundle)
// reruns with its own input.
func TestRerunFromBundle(t *testing.T) {
	h := newHarness(t, nil)
	h.startProcessor()
	alice := token(t, "alice")
	ids, _ := h.batchIDs(alice, []string{
		`{"kind":"video","input":{"n":0}}`,
		`{"kind":"video","priority":"high","input":{"sim":{"fail":"terminal"},"n":1}}`,
		`{"kind":"video","input":{"n":2}}`,
	})
	if n := h.streamMsgs(streams.JobIndex); n != 1 {
		t.Fatalf("JOBINDEX holds %d entries, want one bundle", n)
	}
	h.waitStatus(alice, ids[1], envelope.StatusFailed)
	r := h.do(http.MethodPost, "/v1/jobs/"+ids[1]+"/rerun", nil, bearer(alice))
	if r.Status != http.StatusAccepted {
		t.Fatalf("rerun: %d %s", r.Status, r.Body)
	}
	re := r.snapshot(t)
	if re.RerunOf != ids[1] || re.Priority != envelope.PriorityHigh || re.Kind != "video" {
		t.Fatalf("rerun %+v", re)
	}
	// Its input is job 1's: it fails the same way (jobs 0 and 2 succeed).
	h.waitStatus(alice, re.ID, envelope.StatusFailed)
	got := h.listAll(alice, url.Values{})
	sameIDs(t, "list", got, []string{re.ID, ids[2], ids[1], ids[0]})
}

// TestListBundleCursors: cursors that address a place in a bundle are
// checked like any other.
func TestListBundleCursors(t *testing.T) {
	h := newHarness(t, nil)
	alice := token(t, "alice")
	for _, c := range []string{"1", "0.1", "5.0", "5.-1", "5.+1", "x.1", "5.", ".5", "5.1.1", "5.99999999999"} {
		r := h.do(http.MethodGet, "/v1/jobs?cursor="+url.QueryEscape(c), nil, bearer(alice))
		if r.Status != http.StatusBadRequest || r.errorCode(t) != CodeInvalidCursor {
			t.Errorf("cursor %q: %d %s", c, r.Status, r.Body)
		}
	}
	// A well-formed cursor naming no entry of the caller reads below it.
	ids := h.submitN(alice, "image", 5)
	r, lr := h.list(alice, url.Values{"cursor": {"1000.3"}})
	if r.Status != http.StatusOK {
		t.Fatalf("cursor past the end: %d %s", r.Status, r.Body)
	}
	sameIDs(t, "below 1000.3", func() []string {
		var out []string
		for _, j := range lr.Jobs {
			out = append(out, j.ID)
		}
		return out
	}(), reversed(ids))
}

// TestListManyBundles: a user whose entries are mostly bundles of 100,
// with a single entry between each two and many other users' entries in
// between, pages correctly across bundle and single boundaries in a few
// reads; the log shows how long a page took.
func TestListManyBundles(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	const bundles, per, othersEach = 60, 100, 150
	var aliceIDs []string // oldest first
	pub := func(m *nats.Msg) {
		if _, err := h.js.PublishMsgAsync(m, jetstream.WithExpectStream(streams.JobIndex)); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	newJob := func(user string) envelope.Job {
		n++
		return envelope.Job{ID: fmt.Sprintf("j%07d", n), User: user, Kind: "image", Priority: envelope.PriorityNormal, CreatedAt: time.Now().UTC()}
	}
	for range bundles {
		var body []byte
		for range per {
			j := newJob("alice")
			body = envelope.AppendIndexRecord(body, j.ID, []byte(`{}`))
			aliceIDs = append(aliceIDs, j.ID)
		}
		m := nats.NewMsg(envelope.IndexSubject("alice", "image"))
		m.Data = body
		m.Header.Set(envelope.HeaderIndexBundle, fmt.Sprint(per))
		pub(m)
		j := newJob("alice")
		pub(indexMsg(j, []byte(j.ID)))
		aliceIDs = append(aliceIDs, j.ID)
		for range othersEach {
			o := newJob("other")
			pub(indexMsg(o, []byte(o.ID)))
		}
		select {
		case <-h.js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			t.Fatal("index entries not acknowledged")
		}
	}
	const pages, limit = 6, 45
	newest := reversed(aliceIDs)[:pages*limit]
	h.putSucceeded(ctx, "alice", newest)
	alice := token(t, "alice")
	var got []string
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	for page := range pages {
		start := time.Now()
		r, lr := h.list(alice, q)
		t.Logf("page %d (cursor %q) of a user with %d jobs in %d entries among %d: %v", page, q.Get("cursor"), len(aliceIDs), 2*bundles, n, time.Since(start))
		if r.Status != http.StatusOK || len(lr.Jobs) != limit || lr.NextCursor == "" {
			t.Fatalf("page %d: %d, %d jobs, cursor %q", page, r.Status, len(lr.Jobs), lr.NextCursor)
		}
		for _, j := range lr.Jobs {
			got = append(got, j.ID)
		}
		q.Set("cursor", lr.NextCursor)
	}
	sameIDs(t, "the newest pages", got, newest)
}
