package notifier

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/gorilla/websocket"
)

// TestPanicInFrameHandlerClosesOnlyThatConnection: a panic while handling
// a frame closes that connection with 1011 "internal error" and tears it
// down (its subscriptions go, the connection gauge falls); the process
// and the other connections carry on.
func TestPanicInFrameHandlerClosesOnlyThatConnection(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{onFrame: func(data []byte) {
		if bytes.Contains(data, []byte(`"boom"`)) {
			panic("boom")
		}
	}})
	id := w.newJob(t, "alice")
	a := dial(t, n, token(t, "alice", false))
	b := dial(t, n, token(t, "alice", false))
	if f, _ := a.join("job:"+id, nil); f.status() != "ok" {
		t.Fatalf("join a: %s", f.Payload)
	}
	f, jr := b.join("job:"+id, nil)
	if f.status() != "ok" {
		t.Fatalf("join b: %s", f.Payload)
	}
	b.send(&jr, b.nextRef(), "job:"+id, "boom", map[string]any{})
	if err := b.closeErr(10 * time.Second); !isClose(err, websocket.CloseInternalServerErr) {
		t.Fatalf("b closed with %v, want 1011", err)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		return counterValue(t, n, "beamline_notifier_disconnects_total", "panic") == 1
	})
	tp := topicOf(t, n, "job:"+id)
	testutil.WaitFor(t, 5*time.Second, func() bool { return len(*tp.list.Load()) == 1 })

	w.progress(t, id, 10)
	if p := a.pushes("job:"+id, 1); p[0].Job.Progress != 10 {
		t.Fatalf("a got %+v", p[0])
	}
	c := dial(t, n, token(t, "alice", false))
	if f, _ := c.join("job:"+id, nil); f.status() != "ok" {
		t.Fatalf("join c: %s", f.Payload)
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
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return counterValue(t, n, "beamline_notifier_disconnects_total", "slow_consumer") >= 1
	})
}

// userPush is a user-topic push with its resume point.
type userPush struct {
	Seq       uint64  `json:"seq"`
	StreamSeq uint64  `json:"stream_seq"`
	ResumeSeq *uint64 `json:"resume_seq"`
}

func nextUserPush(t *testing.T, c *client, topic string) userPush {
	t.Helper()
	for {
		f, ok := c.next(10 * time.Second)
		if !ok {
			t.Fatal("no push")
		}
		if f.Topic == topic && f.Event == "job" {
			var p userPush
			if err := json.Unmarshal(f.Payload, &p); err != nil {
				t.Fatal(err)
			}
			if p.ResumeSeq == nil {
				t.Fatalf("user push without resume_seq: %s", f.Payload)
			}
			return p
		}
	}
}

// TestUserTopicResumeSeq: user-topic pushes and the join reply carry
// resume_seq, the subscriber's contiguous watermark: never beyond an event
// that may still arrive late, moving up as the topic is reconciled, and a
// rejoin with last_seq = resume_seq replays everything after it.
func TestUserTopicResumeSeq(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{reconcileEvery: 100 * time.Millisecond})
	a := w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	f, _ := c.join("user:alice", nil)
	var reply struct {
		ResumeSeq *uint64 `json:"resume_seq"`
	}
	if err := json.Unmarshal(f.response(), &reply); err != nil || reply.ResumeSeq == nil {
		t.Fatalf("join reply without resume_seq: %s", f.Payload)
	}
	w.progress(t, a, 10)
	p1 := nextUserPush(t, c, "user:alice")
	if *p1.ResumeSeq >= p1.StreamSeq || *p1.ResumeSeq < *reply.ResumeSeq {
		t.Fatalf("first push: resume_seq %d, stream_seq %d, join's %d", *p1.ResumeSeq, p1.StreamSeq, *reply.ResumeSeq)
	}
	// Once the sweeper has read the topic up to the stream's end, a later
	// push says everything up to the first push arrived.
	tp := topicOf(t, n, "user:alice")
	testutil.WaitFor(t, 5*time.Second, func() bool {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		return tp.mark >= p1.StreamSeq
	})
	w.progress(t, a, 20)
	p2 := nextUserPush(t, c, "user:alice")
	if *p2.ResumeSeq < p1.StreamSeq || *p2.ResumeSeq >= p2.StreamSeq {
		t.Fatalf("second push: resume_seq %d, stream_seq %d (first %d)", *p2.ResumeSeq, p2.StreamSeq, p1.StreamSeq)
	}

	// Resuming from the first push's resume_seq replays both events, and
	// the replayed pushes carry resume_seq up to themselves.
	c2 := dial(t, n, token(t, "alice", false))
	f, _ = c2.join("user:alice", map[string]any{"last_seq": *p1.ResumeSeq})
	var r2 struct {
		Recovered bool   `json:"recovered"`
		ResumeSeq uint64 `json:"resume_seq"`
	}
	_ = json.Unmarshal(f.response(), &r2)
	if !r2.Recovered || r2.ResumeSeq != *p1.ResumeSeq {
		t.Fatalf("resume join: %s", f.Payload)
	}
	for _, want := range []uint64{p1.StreamSeq, p2.StreamSeq} {
		p := nextUserPush(t, c2, "user:alice")
		if p.StreamSeq != want || *p.ResumeSeq != want {
			t.Fatalf("replayed push %+v (resume %d), want stream_seq %d", p, *p.ResumeSeq, want)
		}
	}
}
