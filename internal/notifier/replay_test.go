package notifier

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
)

// TestRestartReplaysMissedEvents: a client joined, the notifier stops, events
// happen, a notifier starts again; rejoining with last_seq yields exactly
// the missed events, then live ones.
func TestRestartReplaysMissedEvents(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	c.join("job:"+id, nil)
	w.start(t, id)
	w.progress(t, id, 10)
	seen := c.pushes("job:"+id, 2)
	n.stop(t)
	if err := c.closeErr(5 * time.Second); !isClose(err, websocket.CloseServiceRestart) {
		t.Fatalf("close: %v", err)
	}
	w.progress(t, id, 20)
	w.progress(t, id, 30)
	n2 := startNotifier(t, w, Config{})
	c2 := dial(t, n2, token(t, "alice", false))
	c2.join("job:"+id, map[string]any{"last_seq": seen[1].Seq})
	w.succeed(t, id)
	got := c2.pushes("job:"+id, 3)
	if got[0].Seq != 3 || got[1].Seq != 4 || got[2].Seq != 5 || got[2].Type != "succeeded" {
		t.Fatalf("%+v", got)
	}
	c2.quiet("job:"+id, 100*time.Millisecond)
}

func TestAgedOutReplayIsNotRecovered(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	w.start(t, id)
	w.progress(t, id, 10)
	w.progress(t, id, 20)
	st, err := w.js.Stream(context.Background(), "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(context.Background(), jetstream.WithPurgeKeep(1)); err != nil {
		t.Fatal(err)
	}
	c := dial(t, n, token(t, "alice", false))
	rep, _ := c.join("job:"+id, map[string]any{"last_seq": 1})
	if !strings.Contains(string(rep.response()), `"recovered":false`) || !strings.Contains(string(rep.response()), `"seq":3`) {
		t.Fatalf("%s", rep.Payload)
	}
	c.quiet("job:"+id, 100*time.Millisecond)
}

// TestUserJoinScanIsBounded: a user with more open jobs than the scan
// bound gets an ok join with what was found and truncated:true, not an
// error the client would retry forever.
func TestUserJoinScanIsBounded(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{userScanMax: 3})
	for range 5 {
		w.start(t, w.newJob(t, "alice"))
	}
	c := dial(t, n, token(t, "alice", false))
	rep, _ := c.join("user:alice", nil)
	var resp struct {
		Jobs      []envelope.Snapshot
		Truncated bool
	}
	if err := json.Unmarshal(rep.response(), &resp); err != nil || rep.status() != "ok" {
		t.Fatalf("%s", rep.Payload)
	}
	if !resp.Truncated || len(resp.Jobs) != 3 {
		t.Fatalf("%s", rep.Payload)
	}
	n2 := startNotifier(t, w, Config{})
	c2 := dial(t, n2, token(t, "alice", false))
	rep, _ = c2.join("user:alice", nil)
	resp.Jobs = nil
	if err := json.Unmarshal(rep.response(), &resp); err != nil || resp.Truncated || len(resp.Jobs) != 5 {
		t.Fatalf("%s", rep.Payload)
	}
}

// TestUserReplayAfterPerSubjectLimit: when max_msgs_per_subject removed a
// chatty job's events after the client's last_seq, the replay says
// recovered:false even though the stream's first seq is old enough.
func TestUserReplayAfterPerSubjectLimit(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	st, err := w.js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgsPerSubject = 3
	if _, err := w.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	n := startNotifier(t, w, Config{})
	quiet := w.newJob(t, "alice")
	w.start(t, quiet) // keeps the stream's first seq at 1
	chatty := w.newJob(t, "alice")
	w.start(t, chatty)
	seen := w.progress(t, chatty, 1) // the client saw up to here
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := info.State.LastSeq
	for p := 2; p <= 6; p++ { // 4 and 5 (job seqs) are removed by the limit
		w.progress(t, chatty, p)
	}
	c := dial(t, n, token(t, "alice", false))
	rep, _ := c.join("user:alice", map[string]any{"last_seq": lastSeq})
	if !strings.Contains(string(rep.response()), `"recovered":false`) {
		t.Fatalf("job seq %d seen, replay %s", seen.Seq, rep.Payload)
	}
	c.quiet("user:alice", 100*time.Millisecond)
	// Nothing removed after last_seq: recovered.
	info, _ = st.Info(ctx)
	w.progress(t, chatty, 7)
	c2 := dial(t, n, token(t, "alice", false))
	rep, _ = c2.join("user:alice", map[string]any{"last_seq": info.State.LastSeq})
	if !strings.Contains(string(rep.response()), `"recovered":true`) {
		t.Fatalf("%s", rep.Payload)
	}
	if p := c2.pushes("user:alice", 1); p[0].Job.Progress != 7 {
		t.Fatalf("%+v", p)
	}
}

// TestUserJoinScanKeepsRecentJobs: a user: join that hits the scan bound
// keeps the most recent jobs (the open ones), not the ones whose last
// event is oldest (finished long ago), and says truncated.
func TestUserJoinScanKeepsRecentJobs(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{userScanMax: 3})
	for range 8 {
		id := w.newJob(t, "alice")
		w.start(t, id)
		w.succeed(t, id)
	}
	open := map[string]bool{}
	for range 3 {
		id := w.newJob(t, "alice")
		w.start(t, id)
		open[id] = true
	}
	c := dial(t, n, token(t, "alice", false))
	rep, _ := c.join("user:alice", nil)
	var resp struct {
		Jobs      []envelope.Snapshot
		StreamSeq uint64 `json:"stream_seq"`
		Truncated bool
	}
	if err := json.Unmarshal(rep.response(), &resp); err != nil || rep.status() != "ok" {
		t.Fatalf("%s", rep.Payload)
	}
	if !resp.Truncated || len(resp.Jobs) != 3 || resp.StreamSeq != lastSeq(t, w) {
		t.Fatalf("%s", rep.Payload)
	}
	for _, j := range resp.Jobs {
		if !open[j.ID] {
			t.Fatalf("job %s is not one of the open ones: %s", j.ID, rep.Payload)
		}
	}
}
