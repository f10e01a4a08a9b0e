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

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/phoenix"
)

// The long-poll transport (docs/phoenix-protocol.md#9-long-poll-transport) for clients that cannot
// keep a WebSocket open. The session (channels, joins, replays, pushes) is
// the one every transport carries; frames the server sends wait in the
// session's queue (bounded by Config.SendQueue; a full queue ends
// the session as it would cut off a slow WebSocket client) until a poll
// takes them, and frames the client POSTs are handled in order, one batch
// at a time. Sessions live in this process only: behind a load balancer a
// client must stick to one notifier, or it gets a 410 and reconnects.

// lpMaxBatch is the most frames one POST may carry (the client sends ≤ 100).
const lpMaxBatch = 100

// lpTransport is the long-poll transport of one session.
type lpTransport struct {
	c      *session
	token  string
	notify chan struct{} // a frame was queued (capacity 1)
	done   chan struct{} // closed when the session fails
	once   sync.Once

	mu       sync.Mutex
	polls    int       // polls being held now
	lastSeen time.Time // end of the last poll or POST
}

func (l *lpTransport) wake() {
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *lpTransport) interrupt() { l.once.Do(func() { close(l.done) }) }

// close has nothing to tell the client: its next request learns that the
// session ended (410).
func (l *lpTransport) close(disconnect) {}

// seen records that the client polled or posted now.
func (l *lpTransport) seen() {
	l.mu.Lock()
	l.lastSeen = time.Now()
	l.mu.Unlock()
}

var _ transport = (*lpTransport)(nil)

// lpRegistry maps session tokens to their transports.
type lpRegistry struct {
	mu sync.Mutex
	m  map[string]*lpTransport
}

func newLPRegistry() *lpRegistry { return &lpRegistry{m: map[string]*lpTransport{}} }

func (r *lpRegistry) get(token string) *lpTransport {
	if token == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[token]
}

// add registers l under a new random token unless max sessions are open.
func (r *lpRegistry) add(l *lpTransport, max int) (string, bool) {
	var b [16]byte // 128 bits from the CSPRNG
	_, _ = rand.Read(b[:])
	token := base64.RawURLEncoding.EncodeToString(b[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.m) >= max {
		return "", false
	}
	r.m[token] = l
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
		if l := s.lpSessionOf(r); l != nil {
			s.lpPoll(w, r, l)
			return
		}
		s.lpOpen(w, r)
	case http.MethodPost:
		l := s.lpSessionOf(r)
		if l == nil {
			lpWrite(w, lpStatus{Status: http.StatusGone})
			return
		}
		s.lpPublish(w, r, l)
	default:
		w.Header().Set("Allow", "GET, POST, OPTIONS")
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET, POST or OPTIONS")
	}
}

// lpSessionOf returns the open session the request names (the
// X-Phoenix-LongPoll-Token header, else the last token query key), or nil.
// A request that also carries a valid credential of another user does not
// get the session: a session token is bound to the user who opened it.
func (s *Service) lpSessionOf(r *http.Request) *lpTransport {
	tok := r.Header.Get("X-Phoenix-LongPoll-Token")
	ts := r.URL.Query()["token"]
	if tok == "" && len(ts) > 0 {
		tok = ts[len(ts)-1]
	}
	l := s.sessions.get(tok)
	if l == nil {
		return nil
	}
	cred := r.Header.Get("X-Phoenix-AuthToken")
	if cred == "" && len(ts) >= 2 {
		cred = ts[0]
	}
	if cred != "" {
		if p, err := s.authenticate(cred); err == nil && (p.User != l.c.p.User || p.Share != l.c.p.Share) {
			return nil
		}
	}
	return l
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
	both := &struct {
		c session
		l lpTransport
	}{}
	c, l := &both.c, &both.l
	l.c, l.notify, l.done, l.lastSeen = c, make(chan struct{}, 1), make(chan struct{}), time.Now()
	c.init(s, p, l)
	token, ok := s.sessions.add(l, s.cfg.LongPollSessions)
	if !ok {
		s.countDisconnect(disconnectSessionsFull)
		busy()
		return
	}
	l.token = token
	if !s.addConn(c) {
		s.sessions.remove(token)
		busy()
		return
	}
	go c.run()
	lpWrite(w, lpPoll{Status: http.StatusGone, Token: token, Messages: []string{}})
}

// loop waits until the session fails or goes unpolled for lpExpiry, then
// forgets its token: session.run then tears it down. (Client frames come
// in POSTs, see receive.)
func (l *lpTransport) loop() disconnect {
	c, s := l.c, l.c.s
	t := time.NewTimer(s.cfg.lpExpiry)
	defer t.Stop()
	defer s.sessions.remove(l.token)
	for {
		select {
		case <-l.done:
			return disconnectExpired // the session failed: not used
		case <-t.C:
			l.mu.Lock()
			idle := time.Since(l.lastSeen)
			held := l.polls > 0
			l.mu.Unlock()
			if !held && idle >= s.cfg.lpExpiry {
				c.fail(disconnectExpired)
				return disconnectExpired
			}
			t.Reset(max(s.cfg.lpExpiry-idle, s.cfg.lpExpiry/10))
		}
	}
}

// lpPoll holds the request up to lpHold for frames: 200 with them, 204
// with none, 410 when the session ended.
func (s *Service) lpPoll(w http.ResponseWriter, r *http.Request, l *lpTransport) {
	c := l.c
	l.mu.Lock()
	l.polls++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.polls--
		l.lastSeen = time.Now()
		l.mu.Unlock()
	}()
	hold := time.NewTimer(s.cfg.lpHold)
	defer hold.Stop()
	for {
		if d, closed := c.closedFor(); closed {
			// A session whose token expired answers 403, as a refused
			// open does: the phoenix client then reconnects with fresh
			// params (a 410 would make it reopen with the old token).
			status := http.StatusGone
			if d == disconnectTokenExpired {
				status = http.StatusForbidden
			}
			lpWrite(w, lpStatus{Status: status})
			return
		}
		if batch := c.take(); batch != nil {
			msgs := make([]string, 0, len(batch))
			for _, f := range batch {
				data := f.data
				if f.binary {
					data = phoenix.TextOf(data)
				}
				if data == nil {
					continue
				}
				msgs = append(msgs, string(data))
				c.sent(f)
			}
			lpWrite(w, lpPoll{Status: http.StatusOK, Token: l.token, Messages: msgs})
			return
		}
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
func (s *Service) lpPublish(w http.ResponseWriter, r *http.Request, l *lpTransport) {
	c := l.c
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
	l.receive(lines)
	if c.isClosed() {
		lpWrite(w, lpStatus{Status: http.StatusGone})
		return
	}
	lpWrite(w, lpStatus{Status: http.StatusOK})
}

// receive hands the frames of one POST to the session, in order, as one
// batch: two POSTs of a client never interleave their frames.
func (l *lpTransport) receive(lines [][]byte) {
	c := l.c
	c.in.Lock()
	defer c.in.Unlock()
	l.seen()
	defer l.seen()
	for _, line := range lines {
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			continue
		}
		if c.isClosed() {
			return
		}
		binary, data := false, line
		if line[0] != '[' {
			var err error
			binary = true
			data, err = base64.StdEncoding.DecodeString(strings.TrimSpace(string(line)))
			if err != nil {
				c.fail(disconnectMalformed)
				return
			}
		}
		if len(data) > c.s.cfg.MaxFrame {
			c.fail(disconnectFrameTooLarge)
			return
		}
		c.receive(binary, data)
	}
}
