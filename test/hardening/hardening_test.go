// Package hardening checks the defences that are not about one service's
// logic: HTTP servers cut off slow clients, the notifier enforces allowed
// origins, and no token, token secret or NATS password reaches a log line.
package hardening

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/test/chaos/kit"
)

// slowloris opens a connection to addr and sends a request's headers one
// byte every 200ms, never finishing them. It returns how long the server
// let it go on before closing the connection, or fails after limit.
func slowloris(t *testing.T, addr string, limit time.Duration) time.Duration {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		// The server either answers (408) and closes, or just closes.
		_, _ = io.Copy(io.Discard, conn)
		close(closed)
	}()
	header := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000)
	for i := 0; ; i++ {
		select {
		case <-closed:
			return time.Since(start)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > limit {
			t.Fatalf("a client trickling headers is still connected after %v", limit)
		}
		if _, err := conn.Write([]byte{header[i%len(header)]}); err != nil {
			return time.Since(start) // the server closed it
		}
	}
}

func TestSlowClientsAreCutOff(t *testing.T) {
	s := startServer(t)
	log := slog.New(slog.DiscardHandler)
	nc, js := connect(t, s, "hardening", log)
	for name, base := range map[string]string{
		"ingest":   startIngest(t, nc, js, log),
		"notifier": startNotifier(t, nc, js, log, nil),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			took := slowloris(t, strings.TrimPrefix(base, "http://"), 20*time.Second)
			t.Logf("%s cut a slowloris client off after %v", name, took.Round(100*time.Millisecond))
		})
	}
}

func TestNotifierEnforcesAllowedOrigins(t *testing.T) {
	s := startServer(t)
	log := slog.New(slog.DiscardHandler)
	nc, js := connect(t, s, "hardening", log)
	token, err := auth.Issue(secret, "alice", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sameOrigin := startNotifier(t, nc, js, log, nil)
	configured := startNotifier(t, nc, js, log, []string{"https://app.example"})
	cases := []struct {
		name, base, origin string
		want               int
	}{
		{"default/evil", sameOrigin, "https://evil.example", http.StatusForbidden},
		{"default/same-origin", sameOrigin, sameOrigin, http.StatusSwitchingProtocols},
		{"default/no-origin (not a browser)", sameOrigin, "", http.StatusSwitchingProtocols},
		{"configured/evil", configured, "https://evil.example", http.StatusForbidden},
		{"configured/lookalike", configured, "https://app.example.evil.example", http.StatusForbidden},
		{"configured/allowed", configured, "https://app.example", http.StatusSwitchingProtocols},
		{"configured/same-origin-not-listed", configured, configured, http.StatusForbidden},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := http.Header{}
			if c.origin != "" {
				hdr.Set("Origin", c.origin)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ws, resp, err := kit.Dial(ctx, c.base, token, hdr)
			if ws != nil {
				ws.Close()
			}
			got := 0
			if resp != nil {
				got = resp.StatusCode
			}
			if got != c.want {
				t.Fatalf("Origin %q: status %d (err %v), want %d", c.origin, got, err, c.want)
			}
		})
	}
}

// TestNoSecretInLogs runs a whole workflow — good and bad tokens, a job
// that retries, WebSocket pushes, a NATS outage at start — with every
// service logging JSON at debug level into one buffer, then searches it for
// the token, the token secret and the NATS password.
func TestNoSecretInLogs(t *testing.T) {
	var buf testutil.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := startServer(t)

	// Connect failures are logged with the URL: a list of servers (as
	// compose passes in $NATS_URL) must have every password redacted.
	down := "nats://" + natsUser + ":" + natsPassword + "@127.0.0.1:1,nats://" + natsUser + ":" + natsPassword + "@127.0.0.1:2"
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	if nc, err := natsx.Connect(ctx, down, "down", log); err == nil {
		nc.Close()
		t.Fatal("connected to nothing")
	} else {
		log.Error("gave up", "err", err) // as a main would
	}
	cancel()

	inc, ijs := connect(t, s, "beamline-ingest", log.With("service", "ingest"))
	pnc, pjs := connect(t, s, "beamline-processor", log.With("service", "processor"))
	nnc, njs := connect(t, s, "beamline-notifier", log.With("service", "notifier"))
	ingestURL := startIngest(t, inc, ijs, log.With("service", "ingest"))
	startProcessor(t, pnc, pjs, log.With("service", "processor"))
	notifURL := startNotifier(t, nnc, njs, log.With("service", "notifier"), nil)

	token, err := auth.Issue(secret, "alice", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := auth.Issue(secret, "alice", false, -time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := auth.Issue([]byte("some-other-secret-0123456789"), "alice", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	hc := &http.Client{Timeout: 10 * time.Second}

	// Refused tokens, on both services.
	for _, bad := range []string{expired, forged, token + "x"} {
		if sub, err := kit.Submit(wctx, hc, ingestURL, bad, "", kit.SimJob("image", nil)); err != nil || sub.Status != http.StatusUnauthorized {
			t.Errorf("bad token: %d %v", sub.Status, err)
		}
		if ws, resp, _ := kit.Dial(wctx, notifURL, bad, nil); ws != nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			if ws != nil {
				ws.Close()
			}
			t.Errorf("bad token on the notifier: %v", resp)
		}
	}
	// A job that fails once, watched over the WebSocket.
	ws, _, err := kit.Dial(wctx, notifURL, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if r, err := ws.Join(wctx, "user:alice", map[string]any{"last_seq": 0}); err != nil || r.Status != "ok" {
		t.Fatalf("join: %v %+v", err, r)
	}
	sub, err := kit.Submit(wctx, hc, ingestURL, token, "key-1", kit.SimJob("image", map[string]any{"fail_times": 1, "steps": 2}))
	if err != nil || sub.Status != http.StatusAccepted {
		t.Fatalf("submit: %v %d %s", err, sub.Status, sub.Body)
	}
	if code, _, err := kit.Get(wctx, hc, ingestURL, token, sub.Snapshot.ID); err != nil || code != http.StatusOK {
		t.Fatalf("get: %d %v", code, err)
	}
	for done := false; !done; {
		select {
		case f := <-ws.Pushes:
			var ev kit.JobEvent
			if f.Event == "job" && json.Unmarshal(f.Payload, &ev) == nil && ev.Job.Status == envelope.StatusSucceeded {
				done = true
			}
		case <-ws.Done():
			t.Fatal(ws.Err())
		case <-wctx.Done():
			t.Fatal("job did not finish")
		}
	}

	logs := buf.String()
	if !strings.Contains(logs, `"service":"processor"`) || !strings.Contains(logs, "nats connect failed") {
		t.Fatalf("the services logged too little for this test to mean anything:\n%s", logs)
	}
	for what, secretValue := range map[string]string{
		"the token":             token,
		"the token's signature": token[strings.LastIndex(token, ".")+1:],
		"an expired token":      expired,
		"a forged token":        forged,
		"the token secret":      string(secret),
		"the NATS password":     natsPassword,
	} {
		if i := strings.Index(logs, secretValue); i >= 0 {
			line := logs[strings.LastIndex(logs[:i], "\n")+1:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("%s is in a log line: %s", what, line)
		}
	}
	if errors.Is(context.Cause(wctx), context.DeadlineExceeded) {
		t.Fatal("workflow ran out of time")
	}
}
