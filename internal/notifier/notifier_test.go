package notifier

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/beamline/beamline/pkg/envelope"
)

func TestJoinJobReceivesEveryEventInOrder(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	rep, jr := c.join("job:"+id, nil)
	if rep.status() != "ok" || *rep.JoinRef != jr {
		t.Fatalf("join reply %+v %s", rep, rep.Payload)
	}
	var resp struct {
		Snapshot  envelope.Snapshot
		Recovered bool
	}
	if err := json.Unmarshal(rep.response(), &resp); err != nil || resp.Snapshot.ID != id || resp.Snapshot.Status != envelope.StatusQueued {
		t.Fatalf("response %s: %v", rep.response(), err)
	}
	w.start(t, id)
	for p := 10; p <= 90; p += 10 {
		w.progress(t, id, p)
	}
	w.succeed(t, id)
	got := c.pushes("job:"+id, 11)
	for i, p := range got {
		if p.Seq != uint64(i+1) || p.Job.Seq != p.Seq || p.StreamSeq == 0 {
			t.Fatalf("push %d: %+v", i, p)
		}
	}
	if got[0].Type != "started" || got[1].Type != "progress" || got[10].Type != "succeeded" || got[10].Job.Status != envelope.StatusSucceeded {
		t.Fatalf("types: %+v", got)
	}
	c.quiet("job:"+id, 100*time.Millisecond)
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
