package notifier

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestBinaryPushEchoes(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	ws, _, err := dialRaw(n, "token="+token(t, "alice", false)+"&vsn=2.0.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.WriteMessage(websocket.TextMessage, []byte(`["1","1","user:alice","phx_join",{}]`))
	if _, b, err := ws.ReadMessage(); err != nil || !bytes.Contains(b, []byte(`"ok"`)) {
		t.Fatalf("%s %v", b, err)
	}
	frame := append([]byte{0, 1, 1, 10, 4}, "12user:aliceping"...)
	frame = append(frame, 0xde, 0xad)
	_ = ws.WriteMessage(websocket.BinaryMessage, frame)
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, b, err := ws.ReadMessage()
	if err != nil || mt != websocket.BinaryMessage {
		t.Fatalf("%d %v", mt, err)
	}
	want := append([]byte{1, 1, 1, 10, 2}, "12user:aliceok"...)
	want = append(want, 0xde, 0xad)
	if !bytes.Equal(b, want) {
		t.Fatalf("%q", b)
	}
}

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
