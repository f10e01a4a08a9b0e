package notifier

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/pkg/envelope"
)

var secret = []byte("test-secret-0123456789abcdef")

func token(t testing.TB, user string, admin bool) string {
	t.Helper()
	tok, err := auth.Issue(secret, user, admin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// world is a NATS server with the streams and a job store publishing events.
type world struct {
	srv   *server.Server
	js    jetstream.JetStream
	store *jobstore.Store
}

func newWorld(t testing.TB) *world {
	srv, _, js := natstest.StartWithStreams(t)
	return worldOn(t, srv, js)
}

func worldOn(t testing.TB, srv *server.Server, js jetstream.JetStream) *world {
	kv, err := jsm.JobStatus(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return &world{srv: srv, js: js, store: jobstore.New(js, kv, jobstore.Config{Source: "/test"})}
}

var jobCounter struct {
	sync.Mutex
	n int
}

func (w *world) newJob(t testing.TB, user string) string {
	t.Helper()
	jobCounter.Lock()
	jobCounter.n++
	id := "job" + strconv.Itoa(jobCounter.n) + "x" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	jobCounter.Unlock()
	_, err := w.store.Create(context.Background(), envelope.Job{
		ID: id, User: user, Kind: "image", Priority: envelope.PriorityNormal, CreatedAt: time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (w *world) start(t testing.TB, id string) envelope.Snapshot {
	t.Helper()
	return w.apply(t, id, envelope.TypeStarted, func(s *envelope.Snapshot) error {
		s.Status, s.Attempt = envelope.StatusRunning, s.Attempt+1
		return nil
	})
}

func (w *world) progress(t testing.TB, id string, p int) envelope.Snapshot {
	t.Helper()
	return w.apply(t, id, envelope.TypeProgress, func(s *envelope.Snapshot) error { s.Progress = p; return nil })
}

func (w *world) succeed(t testing.TB, id string) envelope.Snapshot {
	t.Helper()
	return w.apply(t, id, envelope.TypeSucceeded, func(s *envelope.Snapshot) error {
		s.Status, s.Progress, s.Result = envelope.StatusSucceeded, 100, json.RawMessage(`{"url":"x"}`)
		return nil
	})
}

func (w *world) apply(t testing.TB, id string, typ envelope.Type, m jobstore.Mutation) envelope.Snapshot {
	t.Helper()
	snap, err := w.store.Apply(context.Background(), id, nil, typ, m)
	if err != nil {
		t.Error(err)
	}
	return snap
}

// running is a notifier started on 127.0.0.1:0.
type running struct {
	svc    *Service
	url    string // http://127.0.0.1:port
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startNotifier(t testing.TB, w *world, cfg Config) *running {
	t.Helper()
	return startNotifierOn(t, w, cfg, natstest.Connect(t, w.srv))
}

// startNotifierOn is startNotifier on a given NATS connection.
func startNotifierOn(t testing.TB, w *world, cfg Config, nc *nats.Conn) *running {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listener == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Listener = ln
	}
	cfg.Secret = secret
	reg := prometheus.NewRegistry()
	svc, err := New(cfg, nc, js, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, url: "http://" + cfg.Listener.Addr().String(), reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t testing.TB) {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return")
		}
	})
}

func (r *running) wsURL(params string) string {
	u, _ := url.Parse(r.url)
	u.Scheme = "ws"
	u.Path = "/socket/websocket"
	u.RawQuery = params
	return u.String()
}

// frame is a decoded V2 frame as a test client sees it.
type frame struct{ phoenixtest.Frame }

func (f frame) status() string {
	var r struct{ Status string }
	_ = json.Unmarshal(f.Payload, &r)
	return r.Status
}

func (f frame) response() json.RawMessage {
	var r struct{ Response json.RawMessage }
	_ = json.Unmarshal(f.Payload, &r)
	return r.Response
}

func (f frame) reason() string {
	var r struct{ Response struct{ Reason string } }
	_ = json.Unmarshal(f.Payload, &r)
	return r.Response.Reason
}

// push is the payload of a "job" push.
type push struct {
	Type      string            `json:"type"`
	Job       envelope.Snapshot `json:"job"`
	Seq       uint64            `json:"seq"`
	StreamSeq uint64            `json:"stream_seq"`
}

func (f frame) push(t testing.TB) push {
	t.Helper()
	var p push
	if err := json.Unmarshal(f.Payload, &p); err != nil {
		t.Fatalf("push payload %s: %v", f.Payload, err)
	}
	return p
}

// client is a Phoenix V2 test client (phoenixtest.Client) with the
// assertions these tests make; frames that answer no reply() wait in
// backlog for next().
type client struct {
	t       testing.TB
	pc      *phoenixtest.Client
	backlog []frame
}

func dial(t testing.TB, r *running, tok string) *client {
	t.Helper()
	c, resp, err := dialRaw(r, "token="+url.QueryEscape(tok)+"&vsn=2.0.0", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	return wrap(t, c)
}

func dialRaw(r *running, params string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	return d.Dial(r.wsURL(params), hdr)
}

func wrap(t testing.TB, ws *websocket.Conn) *client {
	c := &client{t: t, pc: phoenixtest.New(ws, phoenixtest.Options{Buffer: 100000})}
	t.Cleanup(c.pc.Abort)
	return c
}

// closeErr waits for the connection to end and returns why.
func (c *client) closeErr(timeout time.Duration) error {
	select {
	case <-c.pc.Done():
	case <-time.After(timeout):
		c.t.Fatal("connection still open")
	}
	return c.pc.Err()
}

func (c *client) nextRef() string { return c.pc.NextRef() }

func (c *client) sendRaw(s string) {
	c.t.Helper()
	if err := c.pc.WriteRaw([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) send(joinRef *string, ref, topic, event string, payload any) {
	c.t.Helper()
	if err := c.pc.Send(joinRef, &ref, topic, event, payload); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next frame in arrival order.
func (c *client) next(timeout time.Duration) (frame, bool) {
	if len(c.backlog) > 0 {
		f := c.backlog[0]
		c.backlog = c.backlog[1:]
		return f, true
	}
	select {
	case f, ok := <-c.pc.Frames():
		return frame{f}, ok
	case <-time.After(timeout):
		return frame{}, false
	}
}

// reply waits for the phx_reply to ref, keeping other frames for next.
func (c *client) reply(ref string) frame {
	c.t.Helper()
	for i, f := range c.backlog {
		if f.Event == "phx_reply" && f.Ref != nil && *f.Ref == ref {
			c.backlog = append(c.backlog[:i:i], c.backlog[i+1:]...)
			return f
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case pf, ok := <-c.pc.Frames():
			if !ok {
				c.t.Fatalf("connection closed waiting for reply %s: %v", ref, c.pc.Err())
			}
			if f := (frame{pf}); f.IsReply(ref) {
				return f
			}
			c.backlog = append(c.backlog, frame{pf})
		case <-deadline:
			c.t.Fatalf("no reply to %s", ref)
		}
	}
}

// join joins topic and returns the reply frame and the join_ref used.
func (c *client) join(topic string, params any) (frame, string) {
	c.t.Helper()
	ref := c.nextRef()
	if params == nil {
		params = map[string]any{}
	}
	c.send(&ref, ref, topic, "phx_join", params)
	return c.reply(ref), ref
}

// pushes collects n "job" pushes on topic, failing on anything unexpected.
func (c *client) pushes(topic string, n int) []push {
	c.t.Helper()
	var out []push
	for len(out) < n {
		f, ok := c.next(10 * time.Second)
		if !ok {
			c.t.Fatalf("got %d of %d pushes on %s", len(out), n, topic)
		}
		if f.Topic == topic && f.Event == "job" {
			out = append(out, f.push(c.t))
		}
	}
	return out
}

// quiet asserts that no push arrives on topic for a short while.
func (c *client) quiet(topic string, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		f, ok := c.next(time.Until(deadline))
		if !ok {
			return
		}
		if f.Topic == topic && f.Event == "job" {
			c.t.Fatalf("unexpected push %s", f.Payload)
		}
	}
}

func isClose(err error, code int) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce) && ce.Code == code
}

func b64std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

type snapshotT = envelope.Snapshot

// counterValue reads a counter from the notifier's registry (label value
// matched against any label).
func counterValue(t testing.TB, r *running, name, label string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					v += m.GetCounter().GetValue()
				}
			}
		}
	}
	return v
}
