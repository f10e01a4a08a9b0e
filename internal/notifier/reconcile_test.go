package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
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
	waitFor(t, 5*time.Second, func() bool { return !nc.IsConnected() })
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
	waitFor(t, 10*time.Second, func() bool {
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

// TestSSEWhileEventsArrive: SSE streams opened while their job is busy
// (run with -race: the stream's state is shared with the live path).
func TestSSEWhileEventsArrive(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	tok := token(t, "alice", false)
	for range 10 {
		id := w.newJob(t, "alice")
		w.start(t, id)
		resp, err := http.Get(n.url + "/v1/jobs/" + id + "/events?token=" + tok)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range 3 {
				w.progress(t, id, p+1)
			}
			w.succeed(t, id)
		}()
		evs := readSSE(t, resp)
		resp.Body.Close()
		wg.Wait()
		if len(evs) == 0 || evs[len(evs)-1].event != "succeeded" {
			t.Fatalf("%+v", evs)
		}
	}
}

// TestSSECaughtUpOnFinishedJob: SSE streams resuming a finished job at its
// last seq while (stray, later-seq) events of the job keep arriving: the
// handler's end-of-stream check and the live path share the stream's
// position (run with -race).
func TestSSECaughtUpOnFinishedJob(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	w.start(t, id)
	final := w.succeed(t, id)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		snap := final
		snap.Status = envelope.StatusRunning // not terminal: the stream goes on past them
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			snap.Seq++
			m, err := envelope.NewEventMsg(envelope.TypeProgress, snap, "/test", "")
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := w.js.PublishMsg(context.Background(), m); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	tok := token(t, "alice", false)
	for range 30 {
		req, _ := http.NewRequest("GET", n.url+"/v1/jobs/"+id+"/events?token="+tok, nil)
		req.Header.Set("Last-Event-ID", "2")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readSSE(t, resp)
		resp.Body.Close()
	}
	close(stop)
	wg.Wait()
}
