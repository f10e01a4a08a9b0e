package notifier

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/testutil"
)

// gateDialer refuses to dial while down, so a test decides when a
// disconnected client gets back.
type gateDialer struct {
	down atomic.Bool
	d    net.Dialer
}

func (g *gateDialer) Dial(network, addr string) (net.Conn, error) {
	if g.down.Load() {
		return nil, errors.New("gate down")
	}
	return g.d.Dial(network, addr)
}

// TestRefillAfterReconnectSkipsNothing: after a NATS reconnect, a live event
// of job B can be handled before the refill. It catches up B's subject only
// and moves the topic past A's missed event; the refill must still deliver
// A's (it reads from the contiguous watermark, not from the last event
// delivered on any subject).
func TestRefillAfterReconnectSkipsNothing(t *testing.T) {
	w := newWorld(t)
	gate := &gateDialer{}
	nc, err := nats.Connect(w.srv.ClientURL(), nats.SetCustomDialer(gate),
		nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	reached, proceed := make(chan struct{}), make(chan struct{})
	var hold, release sync.Once
	n := startNotifierOn(t, w, Config{reconcileEvery: time.Hour, beforeRefill: func() {
		hold.Do(func() { close(reached); <-proceed })
	}}, nc)
	t.Cleanup(func() { release.Do(func() { close(proceed) }) }) // before the notifier stops
	a, b := w.newJob(t, "alice"), w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	c.join("user:alice", nil)
	w.start(t, a)
	w.start(t, b)
	c.pushes("user:alice", 2)

	gate.down.Store(true)
	cid, _ := nc.GetClientID()
	if err := w.srv.DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return !nc.IsConnected() })
	w.progress(t, a, 10) // re-published while the notifier is away: lost
	w.progress(t, b, 10) // lost too
	gate.down.Store(false)
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("no refill after the reconnect")
	}
	if err := nc.Flush(); err != nil { // the subscriptions are back
		t.Fatal(err)
	}
	w.progress(t, b, 20) // live, before the refill: catches up b only
	got := c.pushes("user:alice", 2)
	for i, p := range got {
		if p.Job.ID != b || p.Seq != uint64(i+2) {
			t.Fatalf("before the refill: %+v", got)
		}
	}
	release.Do(func() { close(proceed) })
	got = c.pushes("user:alice", 1)
	if got[0].Job.ID != a || got[0].Seq != 2 || got[0].Job.Progress != 10 {
		t.Fatalf("after the refill: %+v", got)
	}
	c.quiet("user:alice", 100*time.Millisecond)
}

// setRepublish turns EVENTS' re-publish off or back on: a stored event
// that is never re-published is what a leader losing its route, or
// interest still propagating in a cluster, looks like to a notifier.
func setRepublish(t *testing.T, w *world, on bool) {
	t.Helper()
	ctx := context.Background()
	st, err := w.js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.RePublish = nil
	if on {
		cfg.RePublish = &jetstream.RePublish{Source: "events.>", Destination: "live.events.>"}
	}
	if _, err := w.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// TestLostLastEventIsReconciled: a job's terminal event that was stored
// but never re-published (no later event on the subject reveals the gap,
// nothing was dropped by the subscription) still reaches job and user
// topics, through the periodic reconciliation with the stream.
func TestLostLastEventIsReconciled(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{reconcileEvery: 100 * time.Millisecond})
	id := w.newJob(t, "alice")
	cj := dial(t, n, token(t, "alice", false))
	cj.join("job:"+id, nil)
	cu := dial(t, n, token(t, "alice", false))
	cu.join("user:alice", nil)
	w.start(t, id)
	cj.pushes("job:"+id, 1)
	cu.pushes("user:alice", 1)

	setRepublish(t, w, false)
	w.succeed(t, id)
	setRepublish(t, w, true)
	if p := cj.pushes("job:"+id, 1); p[0].Type != "succeeded" || p[0].Seq != 2 {
		t.Fatalf("job topic: %+v", p)
	}
	if p := cu.pushes("user:alice", 1); p[0].Type != "succeeded" || p[0].Seq != 2 {
		t.Fatalf("user topic: %+v", p)
	}
	cj.quiet("job:"+id, 300*time.Millisecond)
	cu.quiet("user:alice", 100*time.Millisecond)
}

// TestSweepDoesNotHoldUpLiveEvents: a topic's live events go out while the
// reconciliation sweep reads its filter from the stream (a busy user
// topic's sweep reads every event since its watermark; holding the topic's
// lock across those round trips delayed its pushes by tens of ms, the
// pipeline's submit→terminal p99.9), and the batch the sweep read before
// them, delivered after them, pushes nothing twice.
func TestSweepDoesNotHoldUpLiveEvents(t *testing.T) {
	w := newWorld(t)
	var armed atomic.Bool
	entered := make(chan struct{})
	release := make(chan struct{})
	n := startNotifier(t, w, Config{reconcileEvery: 100 * time.Millisecond, sweepBatch: func(topic string) {
		if topic != "user:alice" || !armed.CompareAndSwap(true, false) {
			return
		}
		close(entered)
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		}
	}})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	c := dial(t, n, token(t, "alice", false))
	c.join("user:alice", nil)
	id := w.newJob(t, "alice")
	w.start(t, id)
	c.pushes("user:alice", 1)

	// Armed before the event, so the next sweep of user:alice has it to
	// read: it blocks holding a batch with it, not yet delivered.
	armed.Store(true)
	w.progress(t, id, 10)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no sweep read user:alice")
	}
	if p := c.pushes("user:alice", 1); p[0].Type != "progress" || p[0].Seq != 2 {
		t.Fatalf("%+v", p)
	}
	w.succeed(t, id)
	if p := c.pushes("user:alice", 1); p[0].Type != "succeeded" || p[0].Seq != 3 {
		t.Fatalf("%+v", p)
	}
	unblock()
	c.quiet("user:alice", 500*time.Millisecond)
}

// TestUserTopicForgetsFinishedJobs: the per-subject positions of a user
// topic do not grow with every job while it stays joined.
func TestUserTopicForgetsFinishedJobs(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{reconcileEvery: 100 * time.Millisecond})
	c := dial(t, n, token(t, "alice", false))
	c.join("user:alice", nil)
	tp := topicOf(t, n, "user:alice")
	const jobs = 20
	for range jobs {
		id := w.newJob(t, "alice")
		w.start(t, id)
		w.succeed(t, id)
	}
	c.pushes("user:alice", 2*jobs)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		return len(tp.last) == 0
	})
	// Still gap- and duplicate-free afterwards.
	id := w.newJob(t, "alice")
	w.start(t, id)
	if p := c.pushes("user:alice", 1); p[0].Job.ID != id {
		t.Fatalf("%+v", p)
	}
	c.quiet("user:alice", 300*time.Millisecond)
}

// TestNATSReconnectFillsGap: events stored while the notifier's NATS
// connection was down reach its clients after the reconnect.
func TestNATSReconnectFillsGap(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartDir(t, dir)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := jsm.ApplyStreams(context.Background(), js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	w := worldOn(t, srv, js)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	c.join("job:"+id, nil)
	w.start(t, id)
	c.pushes("job:"+id, 1)
	// Cut the notifier's connection only: the server kicks it, it
	// reconnects; meanwhile events are stored.
	cid, _ := n.svc.nc.GetClientID()
	w.progress(t, id, 10)
	if err := srv.DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	w.progress(t, id, 20)
	w.progress(t, id, 30)
	got := c.pushes("job:"+id, 3)
	if got[0].Seq != 2 || got[2].Seq != 4 {
		t.Fatalf("%+v", got)
	}
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
