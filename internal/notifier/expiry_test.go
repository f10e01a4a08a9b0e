package notifier

import (
	"bufio"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/testutil"
)

// shortToken issues a token for user that expires in about ttl, and its
// exact expiry (exp has whole seconds).
func shortToken(t *testing.T, user string, ttl time.Duration) (string, time.Time) {
	t.Helper()
	tok, err := auth.Issue(secret, user, false, ttl)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	return tok, p.Expires
}

// checkClosedAtExpiry fails unless a session ended at exp, within 2 s.
func checkClosedAtExpiry(t *testing.T, what string, at, exp time.Time) {
	t.Helper()
	if at.Before(exp.Add(-100*time.Millisecond)) || at.After(exp.Add(2*time.Second)) {
		t.Fatalf("%s ended %v after the token's expiry, want within [0, 2s]", what, at.Sub(exp))
	}
	t.Logf("%s ended %v after the token's expiry", what, at.Sub(exp).Round(time.Millisecond))
}

// A WebSocket is closed at its token's expiry with 1008 "token expired",
// which makes the phoenix client reconnect (with the fresh token its app
// gives it); pushes stop with it (issue 16, item 6).
func TestWebSocketClosedAtTokenExpiry(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	tok, exp := shortToken(t, "alice", 2*time.Second)
	c := dial(t, n, tok)
	if rep, _ := c.join("user:alice", nil); rep.status() != "ok" {
		t.Fatalf("join: %s", rep.Payload)
	}
	err := c.closeErr(5 * time.Second)
	at := time.Now()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "token expired" {
		t.Fatalf("close: %v, want 1008 token expired", err)
	}
	checkClosedAtExpiry(t, "the WebSocket", at, exp)
	testutil.WaitFor(t, 5*time.Second, func() bool {
		return counterValue(t, n, "beamline_notifier_disconnects_total", "token_expired") == 1
	})
	// The client's reconnect, with a fresh token, is served.
	again := dial(t, n, token(t, "alice", false))
	if rep, _ := again.join("user:alice", nil); rep.status() != "ok" {
		t.Fatalf("rejoin with a fresh token: %s", rep.Payload)
	}
}

// A long-poll session ends at its token's expiry: the poll held then
// answers 403, as a refused open does, so the phoenix client reconnects
// with fresh params.
func TestLongPollEndsAtTokenExpiry(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{lpHold: 5 * time.Second})
	tok, exp := shortToken(t, "alice", 2*time.Second)
	c := newLP(t, n, "token="+url.QueryEscape(tok)+"&vsn=2.0.0")
	c.open()
	c.post(`["1","1","user:alice","phx_join",{}]`)
	c.frames(1, 5*time.Second)
	var a lpAnswer
	for range 10 {
		if a = c.do(http.MethodGet, ""); a.Status != http.StatusNoContent {
			break
		}
	}
	at := time.Now()
	if a.Status != http.StatusForbidden {
		t.Fatalf("poll after expiry: %+v, want status 403", a)
	}
	checkClosedAtExpiry(t, "the long-poll session", at, exp)
	testutil.WaitFor(t, 5*time.Second, func() bool {
		return counterValue(t, n, "beamline_notifier_disconnects_total", "token_expired") == 1
	})
}

// An SSE stream ends at its token's expiry with a token_expired event.
func TestSSEEndsAtTokenExpiry(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	id := w.newJob(t, "alice")
	tok, exp := shortToken(t, "alice", 2*time.Second)
	req, _ := http.NewRequest(http.MethodGet, n.url+"/v1/jobs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET events: %d", resp.StatusCode)
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, ev)
		}
	}
	at := time.Now()
	if len(events) == 0 || events[len(events)-1] != "token_expired" {
		t.Fatalf("events %v, want the last one token_expired", events)
	}
	checkClosedAtExpiry(t, "the SSE stream", at, exp)
}
