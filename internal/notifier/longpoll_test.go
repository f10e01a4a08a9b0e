package notifier

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
)

// lpAnswer is a long-poll response body.
type lpAnswer struct {
	Status   int      `json:"status"`
	Token    *string  `json:"token"`
	Messages []string `json:"messages"`
}

// lpc is a raw long-poll client, as the phoenix LongPoll transport speaks.
type lpc struct {
	t       testing.TB
	base    string // http://host/socket/longpoll?<params>&vsn=2.0.0
	session string
	hdr     http.Header
}

func newLP(t testing.TB, n *running, params string) *lpc {
	return &lpc{t: t, base: n.url + "/socket/longpoll?" + params, hdr: http.Header{}}
}

func (c *lpc) url() string {
	if c.session == "" {
		return c.base + "&"
	}
	return c.base + "&token=" + url.QueryEscape(c.session)
}

func (c *lpc) do(method, body string) lpAnswer {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.url(), strings.NewReader(body))
	for k, v := range c.hdr {
		req.Header[k] = v
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-ndjson")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("HTTP %d (want always 200): %s", resp.StatusCode, b)
	}
	var a lpAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		c.t.Fatalf("body %q: %v", b, err)
	}
	return a
}

// open polls without a session and expects the 410 that opens one.
func (c *lpc) open() {
	c.t.Helper()
	a := c.do(http.MethodGet, "")
	if a.Status != 410 || a.Token == nil || len(*a.Token) < 20 || a.Messages == nil {
		c.t.Fatalf("open: %+v", a)
	}
	c.session = *a.Token
}

func (c *lpc) post(lines ...string) int {
	c.t.Helper()
	return c.do(http.MethodPost, strings.Join(lines, "\n")).Status
}

// poll polls until it has at least n frames (or the deadline).
func (c *lpc) frames(n int, timeout time.Duration) []frame {
	c.t.Helper()
	var out []frame
	deadline := time.Now().Add(timeout)
	for len(out) < n && time.Now().Before(deadline) {
		a := c.do(http.MethodGet, "")
		if a.Status != 200 && a.Status != 204 {
			c.t.Fatalf("poll: %+v", a)
		}
		for _, m := range a.Messages {
			out = append(out, decodeTestFrame(c.t, []byte(m)))
		}
	}
	if len(out) < n {
		c.t.Fatalf("got %d frames, want %d", len(out), n)
	}
	return out
}

func decodeTestFrame(t testing.TB, b []byte) frame {
	t.Helper()
	var parts []json.RawMessage
	if json.Unmarshal(b, &parts) != nil || len(parts) != 5 {
		t.Fatalf("bad frame %s", b)
	}
	var f frame
	_ = json.Unmarshal(parts[0], &f.JoinRef)
	_ = json.Unmarshal(parts[1], &f.Ref)
	_ = json.Unmarshal(parts[2], &f.Topic)
	_ = json.Unmarshal(parts[3], &f.Event)
	f.Payload = parts[4]
	return f
}

func TestLongPollJoinPushAndDelivery(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{lpHold: 300 * time.Millisecond})
	id := w.newJob(t, "alice")
	// The app's token first, then the session token (two token keys).
	c := newLP(t, n, "token="+url.QueryEscape(token(t, "alice", false))+"&vsn=2.0.0")
	c.open()

	// Nothing queued: the poll is held, then 204 with the token.
	if a := c.do(http.MethodGet, ""); a.Status != 204 || a.Token == nil || *a.Token != c.session {
		t.Fatalf("idle poll: %+v", a)
	}
	if st := c.post(`["1","1","job:`+id+`","phx_join",{}]`, `["1","2","job:`+id+`","ping",{"a":1}]`); st != 200 {
		t.Fatalf("post: %d", st)
	}
	fs := c.frames(2, 5*time.Second)
	if fs[0].Event != "phx_reply" || fs[0].status() != "ok" || *fs[0].Ref != "1" {
		t.Fatalf("join reply %+v %s", fs[0], fs[0].Payload)
	}
	if *fs[1].Ref != "2" || string(fs[1].response()) != `{"a":1}` {
		t.Fatalf("ping reply %+v %s", fs[1], fs[1].Payload)
	}

	// A held poll is answered as soon as an event arrives.
	got := make(chan []frame, 1)
	go func() {
		a := c.do(http.MethodGet, "")
		var out []frame
		for _, m := range a.Messages {
			out = append(out, decodeTestFrame(t, []byte(m)))
		}
		got <- out
	}()
	w.start(t, id)
	var ev []frame
	select {
	case ev = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
	if len(ev) == 0 {
		ev = c.frames(1, 5*time.Second)
	}
	if ev[0].Event != "job" || *ev[0].JoinRef != "1" || ev[0].push(t).Seq != 1 {
		t.Fatalf("push %+v %s", ev[0], ev[0].Payload)
	}

	// A base64 binary frame is handled; the binary reply comes back as
	// JSON with the bytes base64-encoded.
	bin := append([]byte{0, 1, 1, byte(len("job:" + id)), 3}, "13job:"+id+"bin"...)
	bin = append(bin, 0xde, 0xad, 0xbe, 0xef)
	if st := c.post(base64.StdEncoding.EncodeToString(bin)); st != 200 {
		t.Fatalf("post binary: %d", st)
	}
	fs = c.frames(1, 5*time.Second)
	var r struct{ Binary string }
	_ = json.Unmarshal(fs[0].response(), &r)
	if *fs[0].Ref != "3" || fs[0].status() != "ok" || r.Binary != base64.StdEncoding.EncodeToString([]byte{0xde, 0xad, 0xbe, 0xef}) {
		t.Fatalf("binary reply %+v %s", fs[0], fs[0].Payload)
	}
}

func TestLongPollAuthToken(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{lpHold: 200 * time.Millisecond})
	c := newLP(t, n, "vsn=2.0.0")
	c.hdr.Set("X-Phoenix-AuthToken", token(t, "bob", false))
	c.open()
	c.post(`["1","1","user:bob","phx_join",{}]`)
	if fs := c.frames(1, 5*time.Second); fs[0].status() != "ok" {
		t.Fatalf("%s", fs[0].Payload)
	}
	// The session token in the header works too; and a session is bound
	// to its user: bob's session with alice's credential is not found.
	h := newLP(t, n, "vsn=2.0.0")
	h.hdr.Set("X-Phoenix-LongPoll-Token", c.session)
	if a := h.do(http.MethodPost, `["1","2","user:bob","ping",{}]`); a.Status != 200 {
		t.Fatalf("header token: %+v", a)
	}
	other := newLP(t, n, "token="+url.QueryEscape(token(t, "alice", false))+"&vsn=2.0.0")
	other.session = c.session
	if a := other.do(http.MethodPost, `["1","3","user:bob","ping",{}]`); a.Status != 410 {
		t.Fatalf("another user's credential: %+v", a)
	}
}

func TestLongPollRejects(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{AllowedOrigins: []string{"https://app.example"}})
	for name, c := range map[string]*lpc{
		"bad token": newLP(t, n, "token=bad&vsn=2.0.0"),
		"no token":  newLP(t, n, "vsn=2.0.0"),
		"no vsn":    newLP(t, n, "token="+url.QueryEscape(token(t, "alice", false))),
	} {
		if a := c.do(http.MethodGet, ""); a.Status != 403 || a.Token != nil {
			t.Errorf("%s: %+v", name, a)
		}
	}
	c := newLP(t, n, "token="+url.QueryEscape(token(t, "alice", false))+"&vsn=2.0.0")
	c.hdr.Set("Origin", "https://evil.example")
	if a := c.do(http.MethodGet, ""); a.Status != 403 {
		t.Errorf("bad origin: %+v", a)
	}
	// An unknown session on POST is gone.
	c = newLP(t, n, "vsn=2.0.0")
	c.session = "nope"
	if st := c.post(`[null,"1","phoenix","heartbeat",{}]`); st != 410 {
		t.Errorf("unknown session POST: %d", st)
	}

	// An allowed origin gets CORS headers, and a preflight is answered.
	req, _ := http.NewRequest(http.MethodOptions, n.url+"/socket/longpoll?vsn=2.0.0", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "X-Phoenix-AuthToken") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestLongPollSessionExpires(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{lpHold: 100 * time.Millisecond, lpExpiry: 300 * time.Millisecond})
	c := newLP(t, n, "token="+url.QueryEscape(token(t, "alice", false))+"&vsn=2.0.0")
	c.open()
	c.post(`["1","1","user:alice","phx_join",{}]`)
	c.frames(1, 5*time.Second)
	// Polling keeps it alive past the expiry...
	for range 6 {
		if a := c.do(http.MethodGet, ""); a.Status != 204 {
			t.Fatalf("poll: %+v", a)
		}
	}
	// ...and going quiet ends it: 410, and its subscriptions are dropped.
	testutil.WaitFor(t, 5*time.Second, func() bool { return counterValue(t, n, "beamline_notifier_disconnects_total", "lp_expired") == 1 })
	if a := c.do(http.MethodGet, ""); a.Status != 410 {
		t.Fatalf("expired session: %+v", a)
	}
	if st := c.post(`["1","2","user:alice","ping",{}]`); st != 410 {
		t.Fatalf("expired session POST: %d", st)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		n.svc.mu.Lock()
		defer n.svc.mu.Unlock()
		return len(n.svc.conns) == 0
	})
}

func TestLongPollBoundedBufferAndSessions(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{SendQueue: 4, LongPollSessions: 1, lpHold: 100 * time.Millisecond})
	c := newLP(t, n, "token="+url.QueryEscape(token(t, "alice", false))+"&vsn=2.0.0")
	c.open()
	// A second session is over the limit: retry later (500).
	if a := newLP(t, n, "token="+url.QueryEscape(token(t, "alice", false))+"&vsn=2.0.0").do(http.MethodGet, ""); a.Status != 500 {
		t.Fatalf("over the session limit: %+v", a)
	}
	c.post(`["2","2","user:alice","phx_join",{}]`)
	c.frames(1, 5*time.Second)
	// Nobody polls: broadcasts fill the buffer and end the session.
	for i := range 10 {
		_ = n.svc.Broadcast("user:alice", "note", map[string]int{"i": i})
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return counterValue(t, n, "beamline_notifier_disconnects_total", "slow_consumer") == 1 })
	// The session is gone: 410. The poll carries alice's token, so it opens
	// a new session in the slot the old one freed (the client, which had a
	// token, takes the 410 as "session gone", reconnects and rejoins).
	if a := c.do(http.MethodGet, ""); a.Status != 410 || a.Token == nil || *a.Token == c.session {
		t.Fatalf("overflowed session: %+v", a)
	}
}
