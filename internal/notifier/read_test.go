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
