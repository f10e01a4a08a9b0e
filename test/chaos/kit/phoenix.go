package kit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Frame is one Phoenix V2 frame: [join_ref, ref, topic, event, payload].
type Frame struct {
	JoinRef *string
	Ref     *string
	Topic   string
	Event   string
	Payload json.RawMessage
}

func (f *Frame) UnmarshalJSON(b []byte) error {
	var a []json.RawMessage
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	if len(a) < 5 {
		return fmt.Errorf("kit: frame with %d elements", len(a))
	}
	if err := json.Unmarshal(a[0], &f.JoinRef); err != nil {
		return err
	}
	if err := json.Unmarshal(a[1], &f.Ref); err != nil {
		return err
	}
	if err := json.Unmarshal(a[2], &f.Topic); err != nil {
		return err
	}
	if err := json.Unmarshal(a[3], &f.Event); err != nil {
		return err
	}
	f.Payload = a[4]
	return nil
}

// Reply is the payload of a phx_reply.
type Reply struct {
	Status   string          `json:"status"`
	Response json.RawMessage `json:"response"`
}

// Socket is a minimal Phoenix V2 client: it answers nothing, sends
// heartbeats, matches replies by ref and hands every other frame to Pushes.
type Socket struct {
	ws      *websocket.Conn
	wmu     sync.Mutex
	ref     atomic.Int64
	mu      sync.Mutex
	waiting map[string]chan Frame
	// Pushes receives every frame that is not a reply to a request of this
	// client. It is large; read it promptly or the reader stalls (and the
	// notifier cuts the client off as slow, as it should).
	Pushes chan Frame
	done   chan struct{}
	once   sync.Once
	err    error
	wg     sync.WaitGroup
}

// WebSocketURL turns the notifier's http://host:port into its Phoenix
// endpoint with token.
func WebSocketURL(base, token string) string {
	u := strings.Replace(base, "http://", "ws://", 1) + "/socket/websocket?vsn=2.0.0"
	if token != "" {
		u += "&token=" + url.QueryEscape(token)
	}
	return u
}

// Dial connects to the notifier at base (http://host:port). hdr may carry an
// Origin. On a refused upgrade the *http.Response tells the status.
func Dial(ctx context.Context, base, token string, hdr http.Header) (*Socket, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.DialContext(ctx, WebSocketURL(base, token), hdr)
	if err != nil {
		return nil, resp, err
	}
	s := &Socket{ws: ws, waiting: map[string]chan Frame{}, Pushes: make(chan Frame, 1<<16), done: make(chan struct{})}
	s.wg.Add(2)
	go s.read()
	go s.heartbeat()
	return s, resp, nil
}

// Done is closed when the connection ends; Err then tells why.
func (s *Socket) Done() <-chan struct{} { return s.done }

// Err is the reason the connection ended.
func (s *Socket) Err() error {
	<-s.done
	return s.err
}

func (s *Socket) fail(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
		_ = s.ws.Close()
	})
}

// Close closes the connection and waits for its goroutines.
func (s *Socket) Close() {
	s.fail(errors.New("kit: closed by client"))
	s.wg.Wait()
}

func (s *Socket) read() {
	defer s.wg.Done()
	for {
		_, data, err := s.ws.ReadMessage()
		if err != nil {
			s.fail(err)
			return
		}
		var f Frame
		if err := json.Unmarshal(data, &f); err != nil {
			s.fail(fmt.Errorf("kit: undecodable frame %q: %w", data, err))
			return
		}
		if f.Event == "phx_reply" && f.Ref != nil {
			s.mu.Lock()
			ch := s.waiting[*f.Ref]
			delete(s.waiting, *f.Ref)
			s.mu.Unlock()
			if ch != nil {
				ch <- f
				continue
			}
		}
		select {
		case s.Pushes <- f:
		case <-s.done:
			return
		}
	}
}

func (s *Socket) heartbeat() {
	defer s.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			ref := strconv.FormatInt(s.ref.Add(1), 10)
			if err := s.write([]any{nil, ref, "phoenix", "heartbeat", map[string]any{}}); err != nil {
				s.fail(err)
				return
			}
		}
	}
}

func (s *Socket) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return s.ws.WriteMessage(websocket.TextMessage, b)
}

// Request sends [joinRef, ref, topic, event, payload] and waits for the
// reply with the same ref. joinRef "" means: use the new ref (a join).
func (s *Socket) Request(ctx context.Context, joinRef, topic, event string, payload any) (Reply, error) {
	ref := strconv.FormatInt(s.ref.Add(1), 10)
	if joinRef == "" {
		joinRef = ref
	}
	ch := make(chan Frame, 1)
	s.mu.Lock()
	s.waiting[ref] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiting, ref)
		s.mu.Unlock()
	}()
	if err := s.write([]any{joinRef, ref, topic, event, payload}); err != nil {
		return Reply{}, err
	}
	select {
	case f := <-ch:
		var r Reply
		err := json.Unmarshal(f.Payload, &r)
		return r, err
	case <-s.done:
		return Reply{}, s.err
	case <-ctx.Done():
		return Reply{}, ctx.Err()
	}
}

// Join joins topic with payload (e.g. {"last_seq": N}).
func (s *Socket) Join(ctx context.Context, topic string, payload any) (Reply, error) {
	if payload == nil {
		payload = map[string]any{}
	}
	return s.Request(ctx, "", topic, "phx_join", payload)
}

// WriteRaw sends raw bytes as one text frame (for malformed-frame tests).
func (s *Socket) WriteRaw(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.ws.WriteMessage(websocket.TextMessage, b)
}
