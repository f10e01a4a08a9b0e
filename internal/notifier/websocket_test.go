package notifier

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

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

// TestWebSocketControlFrames: the notifier frames every frame itself
// (writer.go), so the control frames gorilla would have answered on its
// own are its job too: a ping is answered with a pong carrying the same
// data, in order with the pushes, and a client's close is echoed with its
// code.
func TestWebSocketControlFrames(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	ws, resp, err := dialRaw(n, "token="+url.QueryEscape(token(t, "alice", false))+"&vsn=2.0.0", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	pongs := make(chan string, 10)
	ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
	ended := make(chan error, 1)
	texts := make(chan string, 10)
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				ended <- err
				return
			}
			texts <- string(b)
		}
	}()
	if err := ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-pongs:
		if got != "are you there" {
			t.Fatalf("pong %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	// A text frame still goes through after the pong.
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`[null,"1","phoenix","heartbeat",{}]`)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-texts:
		if !strings.Contains(got, `"ok"`) {
			t.Fatalf("heartbeat reply %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat reply")
	}
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4001 {
			t.Fatalf("connection ended with %v, want the close echoed with 4001", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close not echoed")
	}
}

// TestAppendWSFrameLengths: the three length encodings of RFC 6455 §5.2,
// read back as a client reads them.
func TestAppendWSFrameLengths(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 200 << 10} {
		payload := []byte(strings.Repeat("p", n))
		b := appendWSFrame(nil, wsOpBinary, payload)
		if b[0] != 0x82 || b[1]&0x80 != 0 {
			t.Fatalf("len %d: first bytes % x (want FIN, binary, unmasked)", n, b[:2])
		}
		got, hdr := int(b[1]), 2
		switch got {
		case 126:
			got, hdr = int(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			got, hdr = int(binary.BigEndian.Uint64(b[2:])), 10
		}
		if got != n || len(b) != hdr+n || !bytes.Equal(b[hdr:], payload) {
			t.Fatalf("len %d: framed as %d in %d bytes", n, got, len(b))
		}
	}
}
