package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/beamline/beamline/internal/phoenix"
	"github.com/beamline/beamline/pkg/envelope"
)

// byteCounter counts the bytes a set of connections read and wrote on the
// wire (TCP payload: HTTP headers and WebSocket framing included).
type byteCounter struct{ read, written atomic.Int64 }

func (b *byteCounter) total() int64 { return b.read.Load() + b.written.Load() }

type countedConn struct {
	net.Conn
	c *byteCounter
}

func (c countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.read.Add(int64(n))
	return n, err
}

func (c countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.written.Add(int64(n))
	return n, err
}

// countingDial dials TCP and counts the connection's bytes into c (when set).
func countingDial(c *byteCounter) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil || c == nil {
			return conn, err
		}
		return countedConn{conn, c}, nil
	}
}

// jobPush is the payload of a "job" push.
type jobPush struct {
	Type string `json:"type"`
	Job  struct {
		ID        string          `json:"id"`
		Status    envelope.Status `json:"status"`
		Seq       uint64          `json:"seq"`
		UpdatedAt time.Time       `json:"updated_at"`
	} `json:"job"`
}

// wsClient is a minimal Phoenix V2 client: joins wait for their reply,
// pushes go to onPush with the time they were read.
type wsClient struct {
	c       *websocket.Conn
	wmu     sync.Mutex
	ref     atomic.Uint64
	mu      sync.Mutex
	waiting map[string]chan phoenix.Frame
	onPush  func(f *phoenix.Frame, at time.Time)
	done    chan struct{}
	err     error
}

// wsURL turns the notifier's base URL into its socket URL for token.
func wsURL(base, token string) string {
	u := strings.Replace(strings.Replace(base, "https://", "wss://", 1), "http://", "ws://", 1)
	return u + "/socket/websocket?vsn=2.0.0&token=" + url.QueryEscape(token)
}

// dialWS connects and starts reading; onPush may be nil.
func dialWS(ctx context.Context, base, token string, counter *byteCounter, onPush func(*phoenix.Frame, time.Time)) (*wsClient, error) {
	d := websocket.Dialer{NetDialContext: countingDial(counter), HandshakeTimeout: 10 * time.Second,
		ReadBufferSize: 1024, WriteBufferSize: 1024}
	c, resp, err := d.DialContext(ctx, wsURL(base, token), nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial notifier: %w (HTTP %s)", err, resp.Status)
		}
		return nil, fmt.Errorf("dial notifier: %w", err)
	}
	w := &wsClient{c: c, waiting: map[string]chan phoenix.Frame{}, onPush: onPush, done: make(chan struct{})}
	go w.read()
	return w, nil
}

func (w *wsClient) read() {
	defer close(w.done)
	for {
		_, b, err := w.c.ReadMessage()
		at := time.Now()
		if err != nil {
			w.err = err
			return
		}
		f, err := phoenix.DecodeFrame(b)
		if err != nil {
			continue
		}
		if f.Event == "phx_reply" && f.Ref.Valid {
			w.mu.Lock()
			ch := w.waiting[f.Ref.S]
			delete(w.waiting, f.Ref.S)
			w.mu.Unlock()
			if ch != nil {
				ch <- f
			}
			continue
		}
		if w.onPush != nil {
			w.onPush(&f, at)
		}
	}
}

func (w *wsClient) send(joinRef, ref phoenix.Ref, topic, event string, payload []byte) error {
	b := phoenix.AppendFrame(nil, joinRef, ref, topic, event, payload)
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return w.c.WriteMessage(websocket.TextMessage, b)
}

// join joins topic and returns the reply's response once it says ok.
func (w *wsClient) join(ctx context.Context, topic string, params []byte) (json.RawMessage, error) {
	ref := phoenix.StrRef(strconv.FormatUint(w.ref.Add(1), 10))
	ch := make(chan phoenix.Frame, 1)
	w.mu.Lock()
	w.waiting[ref.S] = ch
	w.mu.Unlock()
	if params == nil {
		params = []byte(`{}`)
	}
	if err := w.send(ref, ref, topic, "phx_join", params); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	select {
	case f := <-ch:
		var r struct {
			Status   string          `json:"status"`
			Response json.RawMessage `json:"response"`
		}
		if err := json.Unmarshal(f.Payload, &r); err != nil {
			return nil, err
		}
		if r.Status != "ok" {
			return nil, fmt.Errorf("join %s: %s %s", topic, r.Status, r.Response)
		}
		return r.Response, nil
	case <-w.done:
		return nil, fmt.Errorf("join %s: connection closed: %w", topic, w.err)
	case <-ctx.Done():
		return nil, fmt.Errorf("join %s: %w", topic, ctx.Err())
	}
}

// heartbeat sends one Phoenix heartbeat (its reply is ignored).
func (w *wsClient) heartbeat() error {
	ref := phoenix.StrRef("hb" + strconv.FormatUint(w.ref.Add(1), 10))
	return w.send(phoenix.Ref{}, ref, "phoenix", "heartbeat", []byte(`{}`))
}

func (w *wsClient) close() {
	w.wmu.Lock()
	w.c.SetWriteDeadline(time.Now().Add(time.Second))
	w.c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	w.wmu.Unlock()
	w.c.Close()
	<-w.done
}

// decodeJobPush reads a "job" push; ok is false for anything else.
func decodeJobPush(f *phoenix.Frame) (jobPush, bool) {
	var p jobPush
	if f.Event != "job" || json.Unmarshal(f.Payload, &p) != nil {
		return p, false
	}
	return p, true
}

// errNoFigures marks a scenario that ran but measured nothing.
var errNoFigures = errors.New("no samples")
