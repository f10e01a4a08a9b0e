package perms

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/test/chaos/kit"
)

// TestNotifierTwoWayWithItsOwnUser: presence, a studio message and a
// cancel push work with the notifier's own NATS user, without one
// permission violation.
func TestNotifierTwoWayWithItsOwnUser(t *testing.T) {
	p := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok, err := auth.IssueWith(secret, auth.Principal{User: "alice", Rooms: auth.RoomsOf("lab")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := kit.Dial(ctx, p.notifierURL, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	wait := func(event string) kit.Frame {
		t.Helper()
		for {
			select {
			case f := <-ws.Pushes:
				if f.Event == event {
					return f
				}
			case <-ctx.Done():
				t.Fatalf("no %s (notifier violations %v)", event, p.notifier.rec.violations())
			}
		}
	}
	jr := ws.NextRef()
	if r, err := ws.Request(ctx, jr, "studio:lab", "phx_join", map[string]any{}); err != nil || r.Status != "ok" {
		t.Fatalf("join studio:lab: %v %+v", err, r)
	}
	wait("presence_state")
	if r, err := ws.Request(ctx, jr, "studio:lab", "msg", map[string]any{"text": "hi"}); err != nil || r.Status != "ok" {
		t.Fatalf("msg: %v %+v (violations %v)", err, r, p.notifier.rec.violations())
	}
	wait("msg")

	hc := &http.Client{Timeout: 10 * time.Second}
	sub, err := kit.Submit(ctx, hc, p.ingestURL, p.token, "", kit.SimJob("image", map[string]any{"duration_ms": 60000}))
	if err != nil || sub.Status != http.StatusAccepted {
		t.Fatalf("submit: %v %+v", err, sub)
	}
	topic := "job:" + sub.Snapshot.ID
	jr = ws.NextRef()
	if r, err := ws.Request(ctx, jr, topic, "phx_join", map[string]any{}); err != nil || r.Status != "ok" {
		t.Fatalf("join %s: %v %+v", topic, err, r)
	}
	r, err := ws.Request(ctx, jr, topic, "cancel", map[string]any{})
	var resp struct{ Job envelope.Snapshot }
	if err != nil || r.Status != "ok" || json.Unmarshal(r.Response, &resp) != nil || resp.Job.Status != envelope.StatusCancelled {
		t.Fatalf("cancel push: %v %+v (notifier violations %v)", err, r, p.notifier.rec.violations())
	}
	time.Sleep(300 * time.Millisecond) // a heartbeat of presence
	p.noViolations(t)
}
