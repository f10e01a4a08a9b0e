package notifier

import (
	"sync"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/phoenix"
	"github.com/beamline/beamline/internal/testutil"
)

// topicOf returns the notifier's topic (test access to the hub).
func topicOf(t *testing.T, r *running, name string) *topic {
	t.Helper()
	sh := r.svc.hub.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	tp := sh.topics[name]
	if tp == nil {
		t.Fatalf("topic %s not joined", name)
	}
	return tp
}

// starve holds the topic's handler (its lock): with lanes of one message
// (Config.laneDepth 1) the lane goroutine waits in the handler with one
// message, one more waits in the lane, and the next ones are dropped by the
// client library.
func starve(t *testing.T, tp *topic) (release func()) {
	t.Helper()
	tp.mu.Lock()
	var once sync.Once
	release = func() { once.Do(tp.mu.Unlock) }
	t.Cleanup(release)
	return release
}

// laneOf is the lane a topic's live messages go through.
func laneOf(r *running, tp *topic) *lane { return r.svc.hub.lane(tp.name) }

// TestLiveGapOnJobTopicIsFilled: live messages the subscription dropped are
// read from the stream and pushed in order: first found through
// Nats-Last-Sequence on the next message, then (a dropped last event, with
// nothing after it) through the subscription's dropped count.
func TestLiveGapOnJobTopicIsFilled(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{laneDepth: 1})
	id := w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	c.join("job:"+id, nil)
	tp := topicOf(t, n, "job:"+id)
	l := laneOf(n, tp)
	dropTwo := func(p int) {
		t.Helper()
		d0, _ := tp.nsub.Delivered()
		w.progress(t, id, p) // taken by the lane, which waits for the lock
		testutil.WaitFor(t, 5*time.Second, func() bool { d, _ := tp.nsub.Delivered(); return d == d0+1 && len(l.ch) == 0 })
		w.progress(t, id, p+1) // pending in the lane
		testutil.WaitFor(t, 5*time.Second, func() bool { return len(l.ch) == 1 })
		dr0, _ := tp.nsub.Dropped()
		w.progress(t, id, p+2) // dropped
		w.progress(t, id, p+3) // dropped
		testutil.WaitFor(t, 5*time.Second, func() bool { d, _ := tp.nsub.Dropped(); return d >= dr0+2 })
	}

	release := starve(t, tp)
	dropTwo(10)
	// Hide the drops from the dropped count: only Nats-Last-Sequence on
	// the next message shows the gap.
	d, _ := tp.nsub.Dropped()
	tp.dropped = uint64(d)
	release()
	got := c.pushes("job:"+id, 2) // the handled and the pending one: the queue is empty
	w.progress(t, id, 50)
	got = append(got, c.pushes("job:"+id, 3)...)

	release = starve(t, tp)
	dropTwo(60) // the last two events are dropped; nothing follows
	release()
	got = append(got, c.pushes("job:"+id, 4)...)
	for i, p := range got {
		if p.Seq != uint64(i+1) {
			t.Fatalf("push %d has seq %d: %+v", i, p.Seq, got)
		}
	}
	c.quiet("job:"+id, 100*time.Millisecond)
}

// TestDropAfterUnfilledGapSkipsNothing: a live message whose gap could not
// be filled (the read came from a replica that lacks the missed event) is
// left to the sweeper unhandled; a drop noticed before the sweep comes must
// read from it on, not from after it: delivering the later events first
// would raise the job's position past the missed ones and every later read
// would skip them (a silent gap).
func TestDropAfterUnfilledGapSkipsNothing(t *testing.T) {
	w := newWorld(t)
	var lag lagging
	// No periodic sweep during the test: only the one the lane asks for.
	n := startNotifier(t, w, Config{laneDepth: 1, reconcileEvery: time.Hour, hideDirect: lag.hide})
	id := w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	c.join("job:"+id, nil)
	tp := topicOf(t, n, "job:"+id)
	l := laneOf(n, tp)
	w.start(t, id) // seq 1
	c.pushes("job:"+id, 1)

	missed := lastSeq(t, w) + 1
	lag.from.Store(missed)
	setRepublish(t, w, false)
	w.progress(t, id, 10) // seq 2, stored at missed, not re-published
	setRepublish(t, w, true)
	w.progress(t, id, 20) // seq 3: its gap cannot be read, left to the sweeper
	testutil.WaitFor(t, 5*time.Second, func() bool { d, _ := tp.nsub.Delivered(); return d == 2 && len(l.ch) == 0 })
	// The sweep the lane asked for runs on the next tick (≤ 1 s) and reads
	// nothing new from the lagging replica; let it pass.
	testutil.WaitFor(t, 5*time.Second, func() bool { return !tp.stale.Load() })
	time.Sleep(300 * time.Millisecond)
	lag.from.Store(0) // the replica caught up

	release := starve(t, tp)
	w.progress(t, id, 30) // seq 4: taken by the lane, which waits for the lock
	testutil.WaitFor(t, 5*time.Second, func() bool { d, _ := tp.nsub.Delivered(); return d == 3 && len(l.ch) == 0 })
	w.progress(t, id, 40) // seq 5: pending in the lane
	testutil.WaitFor(t, 5*time.Second, func() bool { return len(l.ch) == 1 })
	w.progress(t, id, 50) // seq 6: dropped
	testutil.WaitFor(t, 5*time.Second, func() bool { d, _ := tp.nsub.Dropped(); return d >= 1 })
	release()

	got := c.pushes("job:"+id, 5)
	for i, p := range got {
		if p.Seq != uint64(i+2) {
			t.Fatalf("push %d has seq %d: %+v", i, p.Seq, got)
		}
	}
	c.quiet("job:"+id, 200*time.Millisecond)
}

// TestLiveGapOnUserTopicIsFilled: on a user topic the missed event of one
// job is pushed even though a later event of another job went out first
// (it is late, not a duplicate), and each job's events stay in order.
func TestLiveGapOnUserTopicIsFilled(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{laneDepth: 1})
	a, b, x := w.newJob(t, "alice"), w.newJob(t, "alice"), w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	c.join("user:alice", nil)
	tp := topicOf(t, n, "user:alice")
	l := laneOf(n, tp)
	release := starve(t, tp)
	w.start(t, x) // handler
	testutil.WaitFor(t, 5*time.Second, func() bool { d, _ := tp.nsub.Delivered(); return d == 1 && len(l.ch) == 0 })
	w.progress(t, x, 10) // pending in the lane
	testutil.WaitFor(t, 5*time.Second, func() bool { return len(l.ch) == 1 })
	w.start(t, a) // dropped
	testutil.WaitFor(t, 5*time.Second, func() bool { d, _ := tp.nsub.Dropped(); return d >= 1 })
	release()
	w.start(t, b)       // may go out before a's missed event is read
	w.progress(t, a, 5) // reveals a's gap, if the dropped count did not
	got := c.pushes("user:alice", 5)
	seen := map[uint64]bool{}
	last := map[string]uint64{}
	for _, p := range got {
		if seen[p.StreamSeq] {
			t.Fatalf("duplicate stream seq %d: %+v", p.StreamSeq, got)
		}
		seen[p.StreamSeq] = true
		if p.Seq != last[p.Job.ID]+1 {
			t.Fatalf("job %s: seq %d after %d: %+v", p.Job.ID, p.Seq, last[p.Job.ID], got)
		}
		last[p.Job.ID] = p.Seq
	}
	if last[a] != 2 || last[b] != 1 || last[x] != 2 {
		t.Fatalf("got %+v", got)
	}
	c.quiet("user:alice", 100*time.Millisecond)
}

// TestServerEndsTopic: phx_close and phx_error from the server carry the
// channel's join_ref as both refs, end the subscription (the NATS one
// too), and a later push on the topic is unmatched.
func TestServerEndsTopic(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	for _, ev := range []string{phoenix.EventClose, phoenix.EventError} {
		id := w.newJob(t, "alice")
		c := dial(t, n, token(t, "alice", false))
		_, jr := c.join("job:"+id, nil)
		if !n.svc.hub.closeTopic("job:"+id, ev, phoenix.ErrorReason("test")) {
			t.Fatal("topic not joined")
		}
		f, ok := c.next(5 * time.Second)
		if !ok || f.Event != ev || f.JoinRef == nil || *f.JoinRef != jr || f.Ref == nil || *f.Ref != jr {
			t.Fatalf("%s: got %+v", ev, f)
		}
		w.start(t, id)
		c.quiet("job:"+id, 100*time.Millisecond)
		ref := c.nextRef()
		c.send(&jr, ref, "job:"+id, "ping", map[string]any{})
		if r := c.reply(ref); r.reason() != reasonUnmatched {
			t.Fatalf("%s: push after the end: %s", ev, r.Payload)
		}
		// Rejoining works and gets a fresh subscription.
		if r, _ := c.join("job:"+id, map[string]any{"last_seq": 0}); r.status() != "ok" {
			t.Fatalf("%s: rejoin: %s", ev, r.Payload)
		}
		if p := c.pushes("job:"+id, 1); p[0].Seq != 1 {
			t.Fatalf("%s: replay after rejoin: %+v", ev, p)
		}
	}
}
