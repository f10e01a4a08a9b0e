package notifier

import (
	"bytes"
	"testing"
	"time"

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
	waitFor(t, 5*time.Second, func() bool {
		return counterValue(t, n, "beamline_notifier_disconnects_total", "panic") == 1
	})
	tp := topicOf(t, n, "job:"+id)
	waitFor(t, 5*time.Second, func() bool { return len(*tp.list.Load()) == 1 })

	w.progress(t, id, 10)
	if p := a.pushes("job:"+id, 1); p[0].Job.Progress != 10 {
		t.Fatalf("a got %+v", p[0])
	}
	c := dial(t, n, token(t, "alice", false))
	if f, _ := c.join("job:"+id, nil); f.status() != "ok" {
		t.Fatalf("join c: %s", f.Payload)
	}
}
