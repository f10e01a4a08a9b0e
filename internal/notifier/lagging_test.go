package notifier

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
)

// lagging imitates a replica answering direct gets without the events
// from stream seq from on (0: hides nothing), as an R3 follower still
// catching up does (Config.hideDirect).
type lagging struct{ from atomic.Uint64 }

func (l *lagging) hide(m *jetstream.RawStreamMsg) bool {
	f := l.from.Load()
	return f != 0 && m.Sequence >= f
}

// lastSeq is the EVENTS stream's last seq, read from the leader.
func lastSeq(t *testing.T, w *world) uint64 {
	t.Helper()
	st, err := w.js.Stream(context.Background(), "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
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

// TestJoinReadsPastALaggingReplica: a join's replay and open-jobs scan
// answered by a replica that lacks the newest events (at or below the
// topic's position, so they never come live) still carry them: the leader
// shows they exist and they are read.
func TestJoinReadsPastALaggingReplica(t *testing.T) {
	w := newWorld(t)
	var lag lagging
	n := startNotifier(t, w, Config{hideDirect: lag.hide})
	id := w.newJob(t, "alice")
	w.start(t, id)
	w.progress(t, id, 10)
	w.progress(t, id, 20)
	lag.from.Store(lastSeq(t, w)) // the replica lacks job seq 3
	other := w.newJob(t, "alice")
	w.start(t, other) // and this one

	c := dial(t, n, token(t, "alice", false))
	rep, _ := c.join("job:"+id, map[string]any{"last_seq": 1})
	var jr struct {
		Snapshot  envelope.Snapshot
		Recovered bool
	}
	if err := json.Unmarshal(rep.response(), &jr); err != nil || !jr.Recovered || jr.Snapshot.Seq != 3 {
		t.Fatalf("job join: %s", rep.Payload)
	}
	if p := c.pushes("job:"+id, 2); p[0].Seq != 2 || p[1].Seq != 3 {
		t.Fatalf("job replay: %+v", p)
	}
	c.quiet("job:"+id, 100*time.Millisecond)

	rep, _ = c.join("user:alice", map[string]any{"last_seq": 0})
	var ur struct {
		Jobs      []envelope.Snapshot
		Recovered bool
		Truncated bool
	}
	if err := json.Unmarshal(rep.response(), &ur); err != nil || !ur.Recovered || ur.Truncated || len(ur.Jobs) != 2 {
		t.Fatalf("user join: %s", rep.Payload)
	}
	for _, j := range ur.Jobs {
		if want := map[string]uint64{id: 3, other: 1}[j.ID]; j.Seq != want {
			t.Fatalf("user join: job %s at seq %d, want %d: %s", j.ID, j.Seq, want, rep.Payload)
		}
	}
	got := c.pushes("user:alice", 4)
	if last := got[3]; last.Job.ID != other || last.StreamSeq != lastSeq(t, w) {
		t.Fatalf("user replay: %+v", got)
	}
	c.quiet("user:alice", 100*time.Millisecond)
}

// TestLaggingReplicaDoesNotMoveTheWatermark: an event the live path missed
// (never re-published) and a replica does not return yet is not skipped:
// the next live event of the job is held back (its Nats-Last-Sequence
// proves the missed one exists), the sweeper does not move the topic's
// watermark past the missed event on the replica's "nothing there", and
// both are delivered, in order, once the replica has them.
func TestLaggingReplicaDoesNotMoveTheWatermark(t *testing.T) {
	w := newWorld(t)
	var lag lagging
	n := startNotifier(t, w, Config{reconcileEvery: 100 * time.Millisecond, hideDirect: lag.hide})
	id := w.newJob(t, "alice")
	cj := dial(t, n, token(t, "alice", false))
	cj.join("job:"+id, nil)
	cu := dial(t, n, token(t, "alice", false))
	cu.join("user:alice", nil)
	// A job topic is settled from a multi_last answer, a user topic
	// reconciled by reading its filter and asking the leader.
	topics := []*topic{topicOf(t, n, "job:"+id), topicOf(t, n, "user:alice")}
	w.start(t, id)
	cj.pushes("job:"+id, 1)
	cu.pushes("user:alice", 1)

	missed := lastSeq(t, w) + 1
	lag.from.Store(missed)
	setRepublish(t, w, false)
	w.progress(t, id, 10) // stored at missed, not re-published
	setRepublish(t, w, true)
	w.progress(t, id, 20) // live, Nats-Last-Sequence = missed

	// Many sweeps run meanwhile (every 100 ms, and on the next tick for a
	// topic a lane left stale).
	cj.quiet("job:"+id, 800*time.Millisecond)
	cu.quiet("user:alice", 100*time.Millisecond)
	for _, tp := range topics {
		tp.mu.Lock()
		mark, floor := tp.mark, tp.floor("events.alice."+id)
		tp.mu.Unlock()
		if mark >= missed || floor >= missed {
			t.Fatalf("%s: watermark %d, floor %d moved past the unread event at %d", tp.name, mark, floor, missed)
		}
	}

	lag.from.Store(0) // the replica caught up
	for _, c := range []*client{cj, cu} {
		topic := "job:" + id
		if c == cu {
			topic = "user:alice"
		}
		got := c.pushes(topic, 2)
		if got[0].Seq != 2 || got[0].StreamSeq != missed || got[1].Seq != 3 {
			t.Fatalf("%s: %+v", topic, got)
		}
		c.quiet(topic, 300*time.Millisecond)
	}
}
