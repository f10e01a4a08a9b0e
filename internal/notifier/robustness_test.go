package notifier

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
)

func TestMalformedFrames(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	tok := token(t, "alice", false)
	// Addressable but bad payload: error reply, connection stays.
	c := dial(t, n, tok)
	c.sendRaw(`["1","1","job:x","phx_join",[1,2]]`)
	if rep := c.reply("1"); rep.status() != "error" {
		t.Fatalf("%s", rep.Payload)
	}
	c.sendRaw(`["1","2","job:x",7,{}]`)
	if rep := c.reply("2"); rep.status() != "error" {
		t.Fatalf("%s", rep.Payload)
	}
	// Not a frame at all: a reasoned close.
	for _, bad := range []string{`{"a":1}`, `[`, `[1,2,3,4,5]`, `["1","1"]`, "\x00\x00"} {
		c := dial(t, n, tok)
		c.sendRaw(bad)
		if err := c.closeErr(5 * time.Second); !isClose(err, websocket.CloseInvalidFramePayloadData) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	// Oversize: 1009 with a reason.
	c = dial(t, n, tok)
	c.sendRaw(`[null,"1","phoenix","heartbeat",{"x":"` + strings.Repeat("a", 70<<10) + `"}]`)
	err := c.closeErr(5 * time.Second)
	if !isClose(err, websocket.CloseMessageTooBig) || !strings.Contains(err.Error(), "frame too large") {
		t.Fatalf("oversize: %v", err)
	}
}

func TestSlowConsumerIsCutOffOthersKeepReceiving(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{SendQueue: 8, WriteTimeout: 500 * time.Millisecond})
	id := w.newJob(t, "alice")
	tok := token(t, "alice", false)
	good := dial(t, n, tok)
	good.join("job:"+id, nil)

	// A client that joins and then never reads: a raw TCP socket.
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096) // a small window fills up quickly
		}
		return c, err
	}}
	slow, _, err := d.Dial(n.wsURL("token="+tok+"&vsn=2.0.0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if err := slow.WriteMessage(websocket.TextMessage, []byte(`["1","1","job:`+id+`","phx_join",{}]`)); err != nil {
		t.Fatal(err)
	}
	w.start(t, id)
	big := strings.Repeat("x", 200<<10)
	const events = 60
	go func() {
		for p := 1; p <= events; p++ {
			w.apply(t, id, "beamline.job.progress", func(s *snapshotT) error {
				s.Progress, s.Error = p%100, big
				return nil
			})
		}
	}()
	got := good.pushes("job:"+id, events+1)
	for i, p := range got {
		if p.Seq != uint64(i+1) {
			t.Fatalf("good client: push %d seq %d", i, p.Seq)
		}
	}
	waitFor(t, 10*time.Second, func() bool {
		return counterValue(t, n, "beamline_notifier_disconnects_total", "slow_consumer") >= 1
	})
}

func TestShutdownClosesWith1012(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	c := dial(t, n, token(t, "alice", false))
	c.join("user:alice", nil)
	n.stop(t)
	if err := c.closeErr(5 * time.Second); !isClose(err, websocket.CloseServiceRestart) {
		t.Fatalf("close: %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{IdleTimeout: 300 * time.Millisecond})
	c := dial(t, n, token(t, "alice", false))
	// Heartbeats keep it open past the timeout...
	for i := range 6 {
		ref := fmt.Sprint(100 + i)
		c.send(nil, ref, "phoenix", "heartbeat", map[string]any{})
		c.reply(ref)
		time.Sleep(100 * time.Millisecond)
	}
	// ...silence closes it.
	if err := c.closeErr(5 * time.Second); err == nil {
		t.Fatal("no error")
	}
}

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

// TestTwoNotifiersInterestOnly: both deliver, and each one's NATS
// subscriptions cover only its own clients' topics.
func TestTwoNotifiersInterestOnly(t *testing.T) {
	w := newWorld(t)
	a := startNotifier(t, w, Config{})
	b := startNotifier(t, w, Config{})
	j1 := w.newJob(t, "alice")
	j2 := w.newJob(t, "bob")
	ca := dial(t, a, token(t, "alice", false))
	ca.join("job:"+j1, nil)
	cb := dial(t, b, token(t, "alice", false))
	cb.join("job:"+j1, nil)
	cb2 := dial(t, b, token(t, "bob", false))
	cb2.join("user:bob", nil)

	w.start(t, j1)
	w.start(t, j2)
	if p := ca.pushes("job:"+j1, 1); p[0].Seq != 1 {
		t.Fatal(p)
	}
	if p := cb.pushes("job:"+j1, 1); p[0].Seq != 1 {
		t.Fatal(p)
	}
	if p := cb2.pushes("user:bob", 1); p[0].Job.ID != j2 {
		t.Fatal(p)
	}
	subsOf := func(r *running) map[string]bool {
		id, err := r.svc.nc.GetClientID()
		if err != nil {
			t.Fatal(err)
		}
		connz, err := w.srv.Connz(&server.ConnzOptions{CID: id, Subscriptions: true})
		if err != nil || len(connz.Conns) != 1 {
			t.Fatalf("connz: %v %+v", err, connz)
		}
		out := map[string]bool{}
		for _, s := range connz.Conns[0].Subs {
			if strings.HasPrefix(s, "live.events.") || strings.HasPrefix(s, "events.") {
				out[s] = true
			}
		}
		return out
	}
	want := func(r *running, subjects ...string) {
		t.Helper()
		waitFor(t, 5*time.Second, func() bool {
			got := subsOf(r)
			if len(got) != len(subjects) {
				return false
			}
			for _, s := range subjects {
				if !got[s] {
					return false
				}
			}
			return true
		})
	}
	want(a, "live.events.alice."+j1)
	want(b, "live.events.alice."+j1, "live.events.bob.*")
	// Leaving drops the subscription (reference-counted).
	ref := cb2.nextRef()
	jr := "1"
	cb2.send(&jr, ref, "user:bob", "phx_leave", map[string]any{})
	cb2.reply(ref)
	want(b, "live.events.alice."+j1)
	sz, err := w.srv.Subsz(&server.SubszOptions{Subscriptions: true, Test: "live.events.bob." + j2})
	if err != nil || sz.Total != 0 && hasSubject(sz, "live.events.bob.*") {
		t.Fatalf("bob's subject still subscribed: %v %+v", err, sz)
	}
}

func hasSubject(sz *server.Subsz, subj string) bool {
	for _, s := range sz.Subs {
		if s.Subject == subj {
			return true
		}
	}
	return false
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
