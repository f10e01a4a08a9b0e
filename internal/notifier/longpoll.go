package notifier

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/phoenix"
)

// The long-poll transport (PHOENIX-PROTOCOL.md §9) for clients that cannot
// keep a WebSocket open. A session is a conn without a socket: the channel,
// join, replay and push logic is the WebSocket's, frames the server sends
// wait in the conn's queue (bounded by Config.SendQueue; a full queue ends
// the session as it would cut off a slow WebSocket client) until a poll
// takes them, and frames the client POSTs are handled in order, one batch
// at a time. Sessions live in this process only: behind a load balancer a
// client must stick to one notifier, or it gets a 410 and reconnects.

// lpMaxBatch is the most frames one POST may carry (the client sends ≤ 100).
const lpMaxBatch = 100

// lpSession is the long-poll side of a conn.
type lpSession struct {
	c      *conn
	token  string
	notify chan struct{} // a frame was queued (capacity 1)
	done   chan struct{} // closed when the conn fails
	once   sync.Once
	// inMu serializes inbound batches (frames are handled in order, rule
	// 5) and the teardown that drops the subscriptions.
	inMu sync.Mutex

	// Guarded by c.mu.
	polls    int       // polls being held now
	lastSeen time.Time // end of the last poll or POST
}

func (l *lpSession) wake() {
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *lpSession) stop() { l.once.Do(func() { close(l.done) }) }

// lpRegistry maps session tokens to their conns.
type lpRegistry struct {
	mu sync.Mutex
	m  map[string]*conn
}

func newLPRegistry() *lpRegistry { return &lpRegistry{m: map[string]*conn{}} }

func (r *lpRegistry) get(token string) *conn {
	if token == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[token]
}

// add registers c under a new random token unless max sessions are open.
func (r *lpRegistry) add(c *conn, max int) (string, bool) {
	var b [16]byte // 128 bits from the CSPRNG
	_, _ = rand.Read(b[:])
	token := base64.RawURLEncoding.EncodeToString(b[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.m) >= max {
		return "", false
	}
	r.m[token] = c
	return token, true
}

func (r *lpRegistry) remove(token string) {
	r.mu.Lock()
	delete(r.m, token)
	r.mu.Unlock()
}

// lpStatus is an answer without a session ({"status":403}, POST answers).
type lpStatus struct {
	Status int `json:"status"`
}

// lpPoll is an answer that carries the session token and frames.
type lpPoll struct {
	Status   int      `json:"status"`
	Token    string   `json:"token"`
	Messages []string `json:"messages"`
}

// lpWrite writes v. The HTTP status is always 200: the client reads the
// outcome from the body's status.
func lpWrite(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// serveLongPoll serves /socket/longpoll: OPTIONS preflight, GET (open or
// poll) and POST (client frames).
func (s *Service) serveLongPoll(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		lpWrite(w, lpStatus{Status: http.StatusForbidden})
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		h := w.Header()
		h.Add("Vary", "Origin")
		allow := origin
		for _, o := range s.cfg.AllowedOrigins {
			if o == "*" {
				allow = "*"
			}
		}
		h.Set("Access-Control-Allow-Origin", allow)
	}
	switch r.Method {
	case http.MethodOptions:
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Accept, Content-Type, Authorization, X-Requested-With, X-Phoenix-AuthToken, X-Phoenix-LongPoll-Token")
		h.Set("Access-Control-Max-Age", "3600")
		w.WriteHeader(http.StatusOK)
	case http.MethodGet:
		if c := s.lpSessionOf(r); c != nil {
			s.lpPoll(w, r, c)
			return
		}
		s.lpOpen(w, r)
	case http.MethodPost:
		c := s.lpSessionOf(r)
		if c == nil {
			lpWrite(w, lpStatus{Status: http.StatusGone})
			return
		}
		s.lpPublish(w, r, c)
	default:
		w.Header().Set("Allow", "GET, POST, OPTIONS")
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET, POST or OPTIONS")
	}
}

// lpSessionOf returns the open session the request names (the
// X-Phoenix-LongPoll-Token header, else the last token query key), or nil.
// A request that also carries a valid credential of another user does not
// get the session: a session token is bound to the user who opened it.
func (s *Service) lpSessionOf(r *http.Request) *conn {
	tok := r.Header.Get("X-Phoenix-LongPoll-Token")
	ts := r.URL.Query()["token"]
	if tok == "" && len(ts) > 0 {
		tok = ts[len(ts)-1]
	}
	c := s.sessions.get(tok)
	if c == nil {
		return nil
	}
	cred := r.Header.Get("X-Phoenix-AuthToken")
	if cred == "" && len(ts) >= 2 {
		cred = ts[0]
	}
	if cred != "" {
		if p, err := s.authenticate(cred); err == nil && p.User != c.p.User {
			return nil
		}
	}
	return c
}

// lpOpen runs the WebSocket's connect check and opens a session:
// {"status":410,"token":...} (the client's "open"), or {"status":403}.
func (s *Service) lpOpen(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cred := r.Header.Get("X-Phoenix-AuthToken")
	if ts := q["token"]; cred == "" && len(ts) > 0 {
		cred = ts[0] // the app's token; a stale session token comes last
	}
	if q.Get("vsn") != "2.0.0" {
		lpWrite(w, lpStatus{Status: http.StatusForbidden})
		return
	}
	p, err := s.authenticate(cred)
	if err != nil {
		lpWrite(w, lpStatus{Status: http.StatusForbidden})
		return
	}
	busy := func() { lpWrite(w, lpStatus{Status: http.StatusInternalServerError}) } // the client retries with backoff
	select {
	case <-s.quit:
		busy()
		return
	default:
	}
	c := &conn{s: s, p: p, subs: map[string]*sub{}, tokens: float64(2 * s.cfg.PushRate), lastRefill: time.Now()}
	c.cond = sync.NewCond(&c.mu)
	lp := &lpSession{c: c, notify: make(chan struct{}, 1), done: make(chan struct{}), lastSeen: time.Now()}
	c.lp = lp
	token, ok := s.sessions.add(c, s.cfg.LongPollSessions)
	if !ok {
		s.m.disconnects.WithLabelValues("lp_sessions_full").Inc()
		busy()
		return
	}
	lp.token = token
	if !s.addConn(c) {
		s.sessions.remove(token)
		busy()
		return
	}
	go lp.run()
	lpWrite(w, lpPoll{Status: http.StatusGone, Token: token, Messages: []string{}})
}

// run ends the session when it fails or goes unpolled for lpExpiry, then
// drops its subscriptions.
func (l *lpSession) run() {
	c, s := l.c, l.c.s
	defer s.removeConn(c)
	t := time.NewTimer(s.cfg.lpExpiry)
	defer t.Stop()
loop:
	for {
		select {
		case <-l.done:
			break loop
		case <-t.C:
			c.mu.Lock()
			idle := time.Since(l.lastSeen)
			held := l.polls > 0
			c.mu.Unlock()
			if !held && idle >= s.cfg.lpExpiry {
				c.fail(0, "session expired", "lp_expired")
				break loop
			}
			t.Reset(max(s.cfg.lpExpiry-idle, s.cfg.lpExpiry/10))
		}
	}
	s.sessions.remove(l.token)
	l.inMu.Lock()
	for _, sb := range c.subs {
		s.hub.remove(sb)
	}
	clear(c.subs)
	l.inMu.Unlock()
	c.mu.Lock()
	reason := c.reason
	c.queue = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	s.m.disconnects.WithLabelValues(reason).Inc()
}

// lpPoll holds the request up to lpHold for frames: 200 with them, 204
// with none, 410 when the session ended.
func (s *Service) lpPoll(w http.ResponseWriter, r *http.Request, c *conn) {
	l := c.lp
	c.mu.Lock()
	l.polls++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		l.polls--
		l.lastSeen = time.Now()
		c.mu.Unlock()
	}()
	hold := time.NewTimer(s.cfg.lpHold)
	defer hold.Stop()
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			lpWrite(w, lpStatus{Status: http.StatusGone})
			return
		}
		if len(c.queue) > 0 {
			batch := c.queue
			c.queue = nil
			c.cond.Broadcast() // a join's replay may be waiting for room
			c.mu.Unlock()
			msgs := make([]string, 0, len(batch))
			for _, f := range batch {
				data := f.data
				if f.binary {
					data = textOf(data)
				}
				if data == nil {
					continue
				}
				msgs = append(msgs, string(data))
				if !f.at.IsZero() {
					s.m.pushes.Inc()
					s.m.latency.Observe(time.Since(f.at).Seconds())
					s.tracePush(f)
				}
			}
			lpWrite(w, lpPoll{Status: http.StatusOK, Token: l.token, Messages: msgs})
			return
		}
		c.mu.Unlock()
		select {
		case <-l.notify:
		case <-l.done:
		case <-hold.C:
			lpWrite(w, lpPoll{Status: http.StatusNoContent, Token: l.token, Messages: []string{}})
			return
		case <-r.Context().Done():
			return // the client went away; the frames wait for its next poll
		}
	}
}

// lpPublish handles a POST of up to lpMaxBatch newline-separated frames:
// a line starting with "[" is a JSON frame, any other is a base64 binary
// frame.
func (s *Service) lpPublish(w http.ResponseWriter, r *http.Request, c *conn) {
	l := c.lp
	limit := int64(lpMaxBatch) * int64(s.cfg.MaxFrame*4/3+8)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		lpWrite(w, lpStatus{Status: http.StatusBadRequest})
		return
	}
	lines := bytes.Split(body, []byte("\n"))
	if len(lines) > lpMaxBatch {
		lpWrite(w, lpStatus{Status: http.StatusRequestEntityTooLarge})
		return
	}
	l.inMu.Lock()
	defer l.inMu.Unlock()
	c.mu.Lock()
	l.lastSeen = time.Now()
	c.mu.Unlock()
	for _, line := range lines {
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			continue
		}
		if c.isClosed() {
			break
		}
		mt, data := websocket.TextMessage, line
		if line[0] != '[' {
			mt = websocket.BinaryMessage
			data, err = base64.StdEncoding.DecodeString(strings.TrimSpace(string(line)))
			if err != nil {
				c.fail(websocket.CloseInvalidFramePayloadData, "malformed frame", "malformed_frame")
				break
			}
		}
		if len(data) > s.cfg.MaxFrame {
			c.fail(websocket.CloseMessageTooBig, "frame too large", "frame_too_large")
			break
		}
		c.handleSafe(mt, data)
	}
	c.mu.Lock()
	l.lastSeen = time.Now()
	c.mu.Unlock()
	if c.isClosed() {
		lpWrite(w, lpStatus{Status: http.StatusGone})
		return
	}
	lpWrite(w, lpStatus{Status: http.StatusOK})
}

// textOf turns a server binary frame (§7) into a JSON frame for a
// transport that carries text only: the long-poll client decodes every
// message as JSON, so the bytes travel base64-encoded as
// {"binary":"<base64>"} (a reply's response, or a push's payload).
func textOf(b []byte) []byte {
	field := func(p *[]byte, n int) (string, bool) {
		if len(*p) < n {
			return "", false
		}
		s := string((*p)[:n])
		*p = (*p)[n:]
		return s, true
	}
	ref := func(s string) phoenix.Ref {
		if s == "" {
			return phoenix.Ref{}
		}
		return phoenix.StrRef(s)
	}
	wrap := func(raw []byte) []byte {
		out, _ := json.Marshal(map[string]string{"binary": base64.StdEncoding.EncodeToString(raw)})
		return out
	}
	if len(b) < 3 {
		return nil
	}
	switch b[0] {
	case phoenix.KindReply:
		if len(b) < 5 {
			return nil
		}
		rest := b[5:]
		jr, ok1 := field(&rest, int(b[1]))
		rf, ok2 := field(&rest, int(b[2]))
		topic, ok3 := field(&rest, int(b[3]))
		status, ok4 := field(&rest, int(b[4]))
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return nil
		}
		return phoenix.Reply(ref(jr), ref(rf), topic, status, wrap(rest))
	case phoenix.KindPush:
		if len(b) < 4 {
			return nil
		}
		rest := b[4:]
		jr, ok1 := field(&rest, int(b[1]))
		topic, ok2 := field(&rest, int(b[2]))
		event, ok3 := field(&rest, int(b[3]))
		if !ok1 || !ok2 || !ok3 {
			return nil
		}
		return phoenix.AppendFrame(nil, ref(jr), phoenix.Ref{}, topic, event, wrap(rest))
	case phoenix.KindBroadcast:
		rest := b[3:]
		topic, ok1 := field(&rest, int(b[1]))
		event, ok2 := field(&rest, int(b[2]))
		if !ok1 || !ok2 {
			return nil
		}
		return phoenix.AppendFrame(nil, phoenix.Ref{}, phoenix.Ref{}, topic, event, wrap(rest))
	}
	return nil
}
