package notifier

import (
	"bytes"
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
