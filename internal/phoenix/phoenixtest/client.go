// Package phoenixtest is a Phoenix Channels V2 WebSocket client for tests,
// the chaos kit and the benchmark harness: it dials the notifier, joins
// topics, matches replies to requests by ref, hands every other frame to the
// caller (a channel, or a callback with the time it was read) and, when
// asked, sends heartbeats. Frames are decoded by internal/phoenix, the
// notifier's own codec.
package phoenixtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/beamline/beamline/internal/phoenix"
)

// Frame is one Phoenix V2 frame: [join_ref, ref, topic, event, payload];
// a nil JoinRef or Ref is JSON null.
type Frame struct {
	JoinRef *string
	Ref     *string
	Topic   string
	Event   string
	// Payload is the JSON object of a text frame, or the bytes of a
	// binary one (Binary set).
	Payload json.RawMessage
	Binary  bool
}

// UnmarshalJSON decodes a text frame with internal/phoenix.
func (f *Frame) UnmarshalJSON(b []byte) error {
	pf, err := phoenix.DecodeFrame(b)
	if err != nil {
		return err
	}
	*f = frameOf(pf)
	return nil
}

func frameOf(pf phoenix.Frame) Frame {
	return Frame{JoinRef: refPtr(pf.JoinRef), Ref: refPtr(pf.Ref), Topic: pf.Topic, Event: pf.Event, Payload: pf.Payload, Binary: pf.Binary}
}

func refPtr(r phoenix.Ref) *string {
	if !r.Valid {
		return nil
	}
	return &r.S
}

func refOf(s *string) phoenix.Ref {
	if s == nil {
		return phoenix.Ref{}
	}
	return phoenix.StrRef(*s)
}

// IsReply reports whether f is the phx_reply to ref.
func (f *Frame) IsReply(ref string) bool {
	return f.Event == "phx_reply" && f.Ref != nil && *f.Ref == ref
}

// Reply is the payload of a phx_reply.
type Reply struct {
	Status   string          `json:"status"`
	Response json.RawMessage `json:"response"`
}

// Reply decodes f's payload as a phx_reply's.
func (f *Frame) Reply() (Reply, error) {
	var r Reply
	err := json.Unmarshal(f.Payload, &r)
	return r, err
}

// Options tune a Client. Zero values are the defaults.
type Options struct {
	// Header is sent with the upgrade request (e.g. an Origin).
	Header http.Header
	// NetDialContext dials the TCP connection (e.g. to count its bytes).
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// ReadBufferSize and WriteBufferSize are the WebSocket buffers
	// (0: gorilla's default, 4 KiB).
	ReadBufferSize, WriteBufferSize int
	// HandshakeTimeout bounds the upgrade. Default 10 s.
	HandshakeTimeout time.Duration
	// Heartbeat, when > 0, sends a phoenix heartbeat this often.
	Heartbeat time.Duration
	// OnFrame, when set, is called on the reading goroutine with every
	// frame that is not the reply to a Request, and the time it was read;
	// Frames then stays empty.
	OnFrame func(f *Frame, at time.Time)
	// Buffer is the size of the Frames channel. Default 1<<16. When it is
	// full the reader waits, the notifier sees a slow consumer, and cuts
	// the client off, as it should.
	Buffer int
}

// Client is one Phoenix V2 WebSocket connection.
type Client struct {
	ws      *websocket.Conn
	opts    Options
	wmu     sync.Mutex
	ref     atomic.Uint64
	mu      sync.Mutex
	waiting map[string]chan Frame
	frames  chan Frame
	done    chan struct{}
	once    sync.Once
	err     error
	wg      sync.WaitGroup
}

// URL turns the notifier's base URL (http[s]://host:port) into its Phoenix
// WebSocket endpoint; token, when not empty, rides in the query.
func URL(base, token string) string {
	u := strings.Replace(strings.Replace(base, "https://", "wss://", 1), "http://", "ws://", 1) + "/socket/websocket?vsn=2.0.0"
	if token != "" {
		u += "&token=" + url.QueryEscape(token)
	}
	return u
}

// Dial connects to the WebSocket URL u (see URL). On a refused upgrade the
// *http.Response tells the status.
func Dial(ctx context.Context, u string, opts Options) (*Client, *http.Response, error) {
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	d := websocket.Dialer{NetDialContext: opts.NetDialContext, HandshakeTimeout: opts.HandshakeTimeout,
		ReadBufferSize: opts.ReadBufferSize, WriteBufferSize: opts.WriteBufferSize}
	ws, resp, err := d.DialContext(ctx, u, opts.Header)
	if err != nil {
		return nil, resp, err
	}
	return New(ws, opts), resp, nil
}

// New runs a Client on an open WebSocket (opts' dial settings are unused).
func New(ws *websocket.Conn, opts Options) *Client {
	c := &Client{ws: ws, opts: opts, waiting: map[string]chan Frame{}, done: make(chan struct{})}
	if opts.OnFrame == nil {
		if opts.Buffer <= 0 {
			opts.Buffer = 1 << 16
		}
		c.frames = make(chan Frame, opts.Buffer)
	}
	c.wg.Add(1)
	go c.read()
	if opts.Heartbeat > 0 {
		c.wg.Add(1)
		go c.heartbeat(opts.Heartbeat)
	}
	return c
}

// Frames receives every frame that is not the reply to a Request, in
// arrival order, unless Options.OnFrame is set. It is closed when the
// connection ends.
func (c *Client) Frames() <-chan Frame { return c.frames }

// Done is closed when the connection ends; Err then tells why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err waits for the connection to end and returns why.
func (c *Client) Err() error {
	<-c.done
	return c.err
}

func (c *Client) fail(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
		_ = c.ws.Close()
	})
}

// ErrClosed is why a connection the client closed ended.
var ErrClosed = errors.New("phoenixtest: closed by client")

// Close sends a normal close frame, closes the connection and waits for
// the client's goroutines.
func (c *Client) Close() {
	c.wmu.Lock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c.wmu.Unlock()
	c.Abort()
}

// Abort closes the connection without a close frame and waits for the
// client's goroutines.
func (c *Client) Abort() {
	c.fail(ErrClosed)
	c.wg.Wait()
}

func (c *Client) read() {
	defer c.wg.Done()
	if c.frames != nil {
		defer close(c.frames)
	}
	for {
		mt, data, err := c.ws.ReadMessage()
		at := time.Now()
		if err != nil {
			c.fail(err)
			return
		}
		var pf phoenix.Frame
		if mt == websocket.BinaryMessage {
			pf, err = phoenix.DecodeBinary(data)
		} else {
			pf, err = phoenix.DecodeFrame(data)
		}
		if err != nil {
			c.fail(fmt.Errorf("phoenixtest: undecodable frame %q: %w", data, err))
			return
		}
		f := frameOf(pf)
		if f.Event == "phx_reply" && f.Ref != nil {
			c.mu.Lock()
			ch := c.waiting[*f.Ref]
			delete(c.waiting, *f.Ref)
			c.mu.Unlock()
			if ch != nil {
				ch <- f
				continue
			}
		}
		if c.opts.OnFrame != nil {
			c.opts.OnFrame(&f, at)
			continue
		}
		select {
		case c.frames <- f:
		case <-c.done:
			return
		}
	}
}

func (c *Client) heartbeat(every time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			if err := c.Heartbeat(); err != nil {
				c.fail(err)
				return
			}
		}
	}
}

// NextRef returns a fresh ref.
func (c *Client) NextRef() string { return strconv.FormatUint(c.ref.Add(1), 10) }

// Heartbeat sends one phoenix heartbeat; its reply is handed on like any
// frame that answers no Request.
func (c *Client) Heartbeat() error {
	ref := "hb" + c.NextRef()
	return c.Send(nil, &ref, "phoenix", "heartbeat", json.RawMessage(`{}`))
}

// Send writes [joinRef, ref, topic, event, payload]; payload is encoded
// as JSON (a json.RawMessage or []byte as is).
func (c *Client) Send(joinRef, ref *string, topic, event string, payload any) error {
	var p []byte
	switch v := payload.(type) {
	case json.RawMessage:
		p = v
	case []byte:
		p = v
	default:
		var err error
		if p, err = json.Marshal(payload); err != nil {
			return err
		}
	}
	return c.WriteRaw(phoenix.AppendFrame(nil, refOf(joinRef), refOf(ref), topic, event, p))
}

// WriteRaw sends b as one text message, as it is (for malformed frames).
func (c *Client) WriteRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// Request sends [joinRef, ref, topic, event, payload] with a fresh ref and
// waits for the reply to it. joinRef "" means the new ref (a join).
func (c *Client) Request(ctx context.Context, joinRef, topic, event string, payload any) (Reply, error) {
	ref := c.NextRef()
	if joinRef == "" {
		joinRef = ref
	}
	ch := make(chan Frame, 1)
	c.mu.Lock()
	c.waiting[ref] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, ref)
		c.mu.Unlock()
	}()
	if err := c.Send(&joinRef, &ref, topic, event, payload); err != nil {
		return Reply{}, err
	}
	select {
	case f := <-ch:
		return f.Reply()
	case <-c.done:
		return Reply{}, c.err
	case <-ctx.Done():
		return Reply{}, ctx.Err()
	}
}

// Join joins topic with payload (nil: {}; e.g. {"last_seq": N}).
func (c *Client) Join(ctx context.Context, topic string, payload any) (Reply, error) {
	if payload == nil {
		payload = json.RawMessage(`{}`)
	}
	return c.Request(ctx, "", topic, "phx_join", payload)
}

// JoinOK joins topic and returns the reply's response, or an error when
// the reply is not ok.
func (c *Client) JoinOK(ctx context.Context, topic string, payload any) (json.RawMessage, error) {
	r, err := c.Join(ctx, topic, payload)
	switch {
	case err != nil:
		return nil, fmt.Errorf("join %s: %w", topic, err)
	case r.Status != "ok":
		return nil, fmt.Errorf("join %s: %s %s", topic, r.Status, r.Response)
	}
	return r.Response, nil
}
