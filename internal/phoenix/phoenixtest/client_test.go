package phoenixtest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/phoenix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer answers every frame with an ok reply carrying its payload, and
// after a join to "t:push" pushes one "job" frame.
func echoServer(t *testing.T) *httptest.Server {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != "tok" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			f, err := phoenix.DecodeFrame(b)
			if err != nil {
				return
			}
			if err := ws.WriteMessage(websocket.TextMessage, phoenix.Reply(f.JoinRef, f.Ref, f.Topic, "ok", f.Payload)); err != nil {
				return
			}
			if f.Event == "phx_join" && f.Topic == "t:push" {
				push := phoenix.AppendFrame(nil, f.JoinRef, phoenix.Ref{}, f.Topic, "job", []byte(`{"n":1}`))
				if err := ws.WriteMessage(websocket.TextMessage, push); err != nil {
					return
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestClient(t *testing.T) {
	srv := echoServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, resp, err := Dial(ctx, URL(srv.URL, "bad"), Options{}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("refused dial: %v %v", resp, err)
	}
	c, _, err := Dial(ctx, URL(srv.URL, "tok"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.JoinOK(ctx, "t:push", map[string]int{"last_seq": 3})
	if err != nil || string(resp) != `{"last_seq":3}` {
		t.Fatalf("JoinOK = %s %v", resp, err)
	}
	select {
	case f := <-c.Frames():
		if f.Topic != "t:push" || f.Event != "job" || f.Ref != nil || f.JoinRef == nil || string(f.Payload) != `{"n":1}` {
			t.Errorf("push = %+v", f)
		}
	case <-ctx.Done():
		t.Fatal("no push")
	}
	// A heartbeat's reply answers no Request: it is handed on.
	if err := c.Heartbeat(); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-c.Frames():
		if f.Topic != "phoenix" || f.Event != "phx_reply" || f.Ref == nil {
			t.Errorf("heartbeat reply = %+v", f)
		}
		if r, err := f.Reply(); err != nil || r.Status != "ok" {
			t.Errorf("heartbeat reply = %+v %v", r, err)
		}
	case <-ctx.Done():
		t.Fatal("no heartbeat reply")
	}
	c.Close()
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err = %v", c.Err())
	}
	if _, ok := <-c.Frames(); ok {
		t.Error("Frames still open after Close")
	}
}

func TestOnFrameAndHeartbeats(t *testing.T) {
	srv := echoServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan Frame, 16)
	c, _, err := Dial(ctx, URL(srv.URL, "tok"), Options{Heartbeat: 10 * time.Millisecond,
		OnFrame: func(f *Frame, _ time.Time) { got <- *f }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case f := <-got:
		if f.Topic != "phoenix" || !f.IsReply(*f.Ref) {
			t.Errorf("frame = %+v", f)
		}
	case <-ctx.Done():
		t.Fatal("no heartbeat was answered")
	}
	if c.Frames() != nil {
		t.Error("Frames is set although OnFrame is")
	}
}

func TestFrameUnmarshalJSON(t *testing.T) {
	var f Frame
	if err := f.UnmarshalJSON([]byte(`[null,"2","job:a","phx_reply",{"status":"error","response":{"reason":"x"}}]`)); err != nil {
		t.Fatal(err)
	}
	if f.JoinRef != nil || f.Ref == nil || *f.Ref != "2" || !f.IsReply("2") || f.IsReply("3") {
		t.Errorf("frame = %+v", f)
	}
	if err := f.UnmarshalJSON([]byte(`["1"]`)); !errors.Is(err, phoenix.ErrMalformed) {
		t.Errorf("short frame: %v", err)
	}
}
