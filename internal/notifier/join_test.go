package notifier

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/pkg/envelope"
)

func TestJoinAfterFinishReturnsTerminalSnapshot(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	w.start(t, id)
	w.succeed(t, id)
	c := dial(t, n, token(t, "alice", false))
	rep, _ := c.join("job:"+id, nil)
	var resp struct{ Snapshot envelope.Snapshot }
	_ = json.Unmarshal(rep.response(), &resp)
	if rep.status() != "ok" || resp.Snapshot.Status != envelope.StatusSucceeded || resp.Snapshot.Seq != 2 {
		t.Fatalf("reply %s", rep.Payload)
	}
}

func TestJoinErrors(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{MaxChannels: 2})
	bobs := w.newJob(t, "bob")
	alices := w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	for _, tc := range []struct{ topic, reason string }{
		{"job:" + bobs, "unauthorized"},
		{"user:bob", "unauthorized"},
		{"admin:metrics", "unauthorized"},
		{"job:nope", "not_found"},
		{"room:1", "unmatched topic"},
		{"job:a.b", "invalid topic"},
	} {
		rep, _ := c.join(tc.topic, nil)
		if rep.status() != "error" || rep.reason() != tc.reason {
			t.Errorf("%s: %s", tc.topic, rep.Payload)
		}
	}
	if rep, _ := c.join("job:"+alices, map[string]any{"last_seq": "x"}); rep.reason() != "invalid last_seq" {
		t.Errorf("bad params: %s", rep.Payload)
	}
	// MaxChannels.
	for _, topic := range []string{"job:" + alices, "user:alice"} {
		if rep, _ := c.join(topic, nil); rep.status() != "ok" {
			t.Fatalf("%s: %s", topic, rep.Payload)
		}
	}
	if rep, _ := c.join("job:"+w.newJob(t, "alice"), nil); rep.reason() != "too many channels joined" {
		t.Errorf("limit: %s", rep.Payload)
	}
	// An admin may join anything.
	a := dial(t, n, token(t, "root", true))
	for _, topic := range []string{"job:" + bobs, "admin:metrics"} {
		if rep, _ := a.join(topic, nil); rep.status() != "ok" {
			t.Errorf("admin %s: %s", topic, rep.Payload)
		}
	}
}

func TestConnectRejections(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	good := token(t, "alice", false)
	for name, tc := range map[string]struct {
		params string
		hdr    http.Header
	}{
		"bad token":  {"token=nope&vsn=2.0.0", nil},
		"no token":   {"vsn=2.0.0", nil},
		"no vsn":     {"token=" + good, nil},
		"vsn 1":      {"token=" + good + "&vsn=1.0.0", nil},
		"origin":     {"token=" + good + "&vsn=2.0.0", http.Header{"Origin": {"http://evil.example"}}},
		"bad bearer": {"vsn=2.0.0", http.Header{"Sec-Websocket-Protocol": {"phoenix, base64url.bearer.phx.bm9wZQ"}}},
	} {
		_, resp, err := dialRaw(n, tc.params, tc.hdr)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %v %v", name, err, resp)
			continue
		}
		if resp.ContentLength > 0 {
			t.Errorf("%s: 403 has a body", name)
		}
	}
	// Same origin is fine.
	ws, _, err := dialRaw(n, "token="+good+"&vsn=2.0.0", http.Header{"Origin": {n.url}})
	if err != nil {
		t.Fatalf("same origin: %v", err)
	}
	ws.Close()
}

func TestSubprotocolBearer(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	tok := token(t, "alice", false)
	b64 := strings.TrimRight(b64std(tok), "=")
	d := websocket.Dialer{Subprotocols: []string{"phoenix", "base64url.bearer.phx." + b64}}
	ws, resp, err := d.Dial(n.wsURL("vsn=2.0.0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Values("Sec-Websocket-Protocol"); len(got) != 1 || got[0] != "phoenix" {
		t.Fatalf("subprotocol %q", got)
	}
	c := wrap(t, ws)
	if rep, _ := c.join("user:alice", nil); rep.status() != "ok" {
		t.Fatalf("%s", rep.Payload)
	}
	// No subprotocol asked, none answered.
	ws2, resp, err := dialRaw(n, "token="+tok+"&vsn=2.0.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	ws2.Close()
	if resp.Header.Get("Sec-Websocket-Protocol") != "" {
		t.Fatal("answered a subprotocol nobody asked for")
	}
}

func TestHeartbeatAndUnjoinedTopics(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	c := dial(t, n, token(t, "alice", false))
	c.send(nil, "7", "phoenix", "heartbeat", map[string]any{})
	rep := c.reply("7")
	if rep.JoinRef != nil || rep.status() != "ok" || string(rep.response()) != "{}" {
		t.Fatalf("heartbeat reply %+v %s", rep, rep.Payload)
	}
	jr := "3"
	c.send(&jr, "8", "job:x", "phx_leave", map[string]any{})
	if rep := c.reply("8"); rep.status() != "ok" {
		t.Fatalf("leave unjoined: %s", rep.Payload)
	}
	c.send(&jr, "9", "job:x", "new_msg", map[string]any{})
	if rep := c.reply("9"); rep.status() != "error" || rep.reason() != "unmatched topic" || rep.JoinRef != nil {
		t.Fatalf("push unjoined: %+v %s", rep, rep.Payload)
	}
}

func TestDuplicateJoinAndStaleJoinRef(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	topic := "job:" + id
	c := dial(t, n, token(t, "alice", false))
	_, first := c.join(topic, nil)
	// Second join on the same topic: reply to it, then phx_close for the first.
	second := c.nextRef()
	c.send(&second, second, topic, "phx_join", map[string]any{})
	f1, _ := c.next(5 * time.Second)
	f2, _ := c.next(5 * time.Second)
	if f1.Event != "phx_reply" || *f1.Ref != second || f1.status() != "ok" {
		t.Fatalf("first frame %+v", f1)
	}
	if f2.Event != "phx_close" || *f2.JoinRef != first || *f2.Ref != first {
		t.Fatalf("second frame %+v", f2)
	}
	// Stale join_ref: ignored without reply, even a leave.
	ref := c.nextRef()
	c.send(&first, ref, topic, "phx_leave", map[string]any{})
	hb := c.nextRef()
	c.send(nil, hb, "phoenix", "heartbeat", map[string]any{})
	if f, _ := c.next(5 * time.Second); f.Ref == nil || *f.Ref != hb {
		t.Fatalf("stale leave was answered: %+v %s", f, f.Payload)
	}
	// The second join is live and pushes carry its join_ref, once.
	w.start(t, id)
	f, _ := c.next(5 * time.Second)
	if f.Event != "job" || *f.JoinRef != second || f.Ref != nil {
		t.Fatalf("push %+v", f)
	}
	c.quiet(topic, 100*time.Millisecond)
	// Leave: ok, phx_close, and nothing after.
	ref = c.nextRef()
	c.send(&second, ref, topic, "phx_leave", map[string]any{})
	if rep := c.reply(ref); rep.status() != "ok" {
		t.Fatalf("leave %s", rep.Payload)
	}
	if f, _ := c.next(5 * time.Second); f.Event != "phx_close" {
		t.Fatalf("after leave %+v", f)
	}
	w.progress(t, id, 50)
	c.quiet(topic, 200*time.Millisecond)
}

func TestReplayFromLastSeq(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	w.start(t, id)
	for p := 1; p <= 4; p++ {
		w.progress(t, id, p*20)
	}
	c := dial(t, n, token(t, "alice", false))
	rep, _ := c.join("job:"+id, map[string]any{"last_seq": 2})
	var resp struct {
		Snapshot  envelope.Snapshot
		Recovered bool
	}
	_ = json.Unmarshal(rep.response(), &resp)
	if !resp.Recovered || resp.Snapshot.Seq != 5 {
		t.Fatalf("reply %s", rep.Payload)
	}
	w.succeed(t, id)
	got := c.pushes("job:"+id, 4)
	for i, p := range got {
		if p.Seq != uint64(3+i) {
			t.Fatalf("push %d seq %d", i, p.Seq)
		}
	}
	c.quiet("job:"+id, 100*time.Millisecond)
}

func TestReplayRaceWithLiveEvents(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	const total = 60
	for round := range 3 {
		id := w.newJob(t, "alice")
		w.start(t, id)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := 1; p < total; p++ {
				w.progress(t, id, p)
			}
		}()
		c := dial(t, n, token(t, "alice", false))
		rep, _ := c.join("job:"+id, map[string]any{"last_seq": 0})
		if rep.status() != "ok" {
			t.Fatalf("round %d: %s", round, rep.Payload)
		}
		got := c.pushes("job:"+id, total)
		for i, p := range got {
			if p.Seq != uint64(i+1) {
				t.Fatalf("round %d: push %d has seq %d", round, i, p.Seq)
			}
		}
		wg.Wait()
		c.quiet("job:"+id, 50*time.Millisecond)
	}
}

func TestUserTopic(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	done := w.newJob(t, "alice")
	w.start(t, done)
	w.succeed(t, done)
	busy := w.newJob(t, "alice")
	w.start(t, busy)
	other := w.newJob(t, "bob")
	w.start(t, other)

	c := dial(t, n, token(t, "alice", false))
	rep, _ := c.join("user:alice", nil)
	var resp struct {
		Jobs      []envelope.Snapshot
		StreamSeq uint64 `json:"stream_seq"`
	}
	_ = json.Unmarshal(rep.response(), &resp)
	if len(resp.Jobs) != 1 || resp.Jobs[0].ID != busy || resp.StreamSeq == 0 {
		t.Fatalf("reply %s", rep.Payload)
	}
	w.progress(t, other, 10) // bob's: not for alice
	w.progress(t, busy, 50)
	w.succeed(t, busy)
	got := c.pushes("user:alice", 2)
	if got[0].Job.ID != busy || got[0].Type != "progress" || got[1].Type != "succeeded" || got[1].StreamSeq <= got[0].StreamSeq {
		t.Fatalf("pushes %+v", got)
	}
	// Resume by stream seq from a second connection: exactly what came after.
	c2 := dial(t, n, token(t, "alice", false))
	rep, _ = c2.join("user:alice", map[string]any{"last_seq": resp.StreamSeq})
	if !strings.Contains(string(rep.response()), `"recovered":true`) {
		t.Fatalf("replay reply %s", rep.Payload)
	}
	again := c2.pushes("user:alice", 2)
	if again[0].StreamSeq != got[0].StreamSeq || again[1].StreamSeq != got[1].StreamSeq {
		t.Fatalf("replayed %+v, live %+v", again, got)
	}
	c2.quiet("user:alice", 100*time.Millisecond)
}

func TestBroadcastAdminMetrics(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	a := dial(t, n, token(t, "root", true))
	if rep, _ := a.join("admin:metrics", nil); rep.status() != "ok" {
		t.Fatal(rep.Payload)
	}
	if err := n.svc.Broadcast("admin:metrics", "metrics", map[string]int{"jobs": 3}); err != nil {
		t.Fatal(err)
	}
	f, _ := a.next(5 * time.Second)
	if f.Event != "metrics" || string(f.Payload) != `{"jobs":3}` {
		t.Fatalf("%+v %s", f, f.Payload)
	}
	if err := n.svc.Broadcast("admin:metrics", "metrics", []int{1}); err == nil {
		t.Fatal("non-object payload accepted")
	}
}

// A job that is accepted but not yet written by any processor has no
// snapshot in job_status, only its message in JOBS (ingest stores nothing
// else): a job: join answers with its queued snapshot read from there, and
// the job's first change, which creates the snapshot, is pushed.
func TestJoinQueuedJobReadFromJobs(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	ctx := t.Context()
	job := envelope.Job{ID: "queued-1", User: "alice", Kind: "image", Priority: envelope.PriorityHigh, CreatedAt: time.Now().UTC()}
	msg, err := envelope.NewJobMsg(job, "/test", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	c := dial(t, n, token(t, "alice", false))
	rep, _ := c.join("job:"+job.ID, nil)
	var resp struct{ Snapshot envelope.Snapshot }
	_ = json.Unmarshal(rep.response(), &resp)
	if rep.status() != "ok" || resp.Snapshot.ID != job.ID || resp.Snapshot.Status != envelope.StatusQueued ||
		resp.Snapshot.Seq != 0 || resp.Snapshot.Priority != envelope.PriorityHigh {
		t.Fatalf("join reply %s", rep.Payload)
	}
	// Another user's queued job is refused like a stored one.
	other := dial(t, n, token(t, "bob", false))
	if rep, _ := other.join("job:"+job.ID, nil); rep.status() != "error" || rep.reason() != "unauthorized" {
		t.Fatalf("bob's join: %s", rep.Payload)
	}

	// The processor's first change: a create at RevAbsent, seq 1.
	queued, rev, err := w.store.Lookup(ctx, job.ID)
	if err != nil || rev != jobstore.RevAbsent {
		t.Fatalf("Lookup = %+v rev %d, %v", queued, rev, err)
	}
	if _, _, err := w.store.ApplyAt(ctx, queued, rev, envelope.TypeStarted, func(s *envelope.Snapshot) error {
		s.Status, s.Attempt = envelope.StatusRunning, 1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p := c.pushes("job:"+job.ID, 1)[0]
	if p.Type != "started" || p.Seq != 1 || p.Job.Status != envelope.StatusRunning {
		t.Fatalf("push %+v", p)
	}
}
