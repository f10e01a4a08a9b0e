package beamctl

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/pkg/envelope"
)

// pushed is the payload of a `job` push on a user: topic.
type pushed struct {
	Type      string            `json:"type"`
	Job       envelope.Snapshot `json:"job"`
	Seq       uint64            `json:"seq"`
	StreamSeq uint64            `json:"stream_seq"`
	ResumeSeq *uint64           `json:"resume_seq"`
}

// subOf reads the sub claim of a JWT without verifying it (the notifier
// verifies; this only picks the topic).
func subOf(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(b, &c)
	return c.Sub
}

func tailCmd() *command {
	var user string
	var count int
	return &command{name: "tail", args: "[--user U]",
		summary: "print a user's job events live, one line each (-o json: one JSON object a line)",
		help: "Joins the notifier's user:<U> topic over WebSocket (the Phoenix protocol apps\n" +
			"use) and prints every event as it happens until Ctrl-C. U defaults to the\n" +
			"token's own user; another user needs an admin token. A dropped connection is\n" +
			"resumed from the last event seen, so no event is missed or printed twice.",
		needs: []string{"api", "notifier"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&user, "user", "", "whose events (default: the token's user)")
			fs.IntVar(&count, "n", 0, "stop after this many events (default: run until interrupted)")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if e.token == "" {
				return usagef("no token: pass --token or set $%s", EnvToken)
			}
			if user == "" {
				if user = subOf(e.token); user == "" {
					return usagef("the token names no user: pass --user")
				}
			}
			if err := envelope.ValidateID("user", user); err != nil {
				return usagef("--user: %v", err)
			}
			t := &tailer{e: e, topic: "user:" + user, count: count}
			return t.run(ctx)
		},
	}
}

type tailer struct {
	e       *env
	topic   string
	count   int
	printed int
	resume  *uint64 // last_seq for a rejoin
}

// errDone ends a tail that printed its --n events.
var errDone = errors.New("done")

func (t *tailer) run(ctx context.Context) error {
	connected := false
	backoff := 250 * time.Millisecond
	for {
		err := t.session(ctx, &connected)
		switch {
		case errors.Is(err, errDone), ctx.Err() != nil:
			return nil
		case !connected:
			return err // never joined: a wrong URL or token, say so now
		}
		var ae *APIError
		if errors.As(err, &ae) && exitCode(err) == ExitRefused {
			return err // e.g. the token expired: a new one is needed
		}
		if !t.e.json() {
			fmt.Fprintf(t.e.stderr, "tail: %v; reconnecting\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// session runs one connection: dial, join (resuming), print until it ends.
func (t *tailer) session(ctx context.Context, connected *bool) error {
	u := phoenixtest.URL(t.e.notifier, t.e.token)
	c, resp, err := phoenixtest.Dial(ctx, u, phoenixtest.Options{Heartbeat: 25 * time.Second, Buffer: 4096})
	if err != nil {
		switch {
		case resp != nil && resp.StatusCode == http.StatusForbidden:
			return &APIError{Method: "GET", URL: t.e.notifier + "/socket/websocket", Status: resp.StatusCode,
				Message: "the notifier refused the token (wrong secret, expired, or an Origin it does not allow)"}
		case resp != nil:
			return fmt.Errorf("no notifier WebSocket at %s (HTTP %d): pass --notifier (or $%s) unless ingest and the notifier share one origin behind the gateway",
				t.e.notifier, resp.StatusCode, EnvNotifier)
		}
		return fmt.Errorf("connect to the notifier at %s: %w", t.e.notifier, err)
	}
	defer c.Close()
	var payload any
	if t.resume != nil {
		payload = map[string]uint64{"last_seq": *t.resume}
	}
	jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	r, err := c.Join(jctx, t.topic, payload)
	cancel()
	if err != nil {
		return fmt.Errorf("join %s: %w", t.topic, err)
	}
	if r.Status != "ok" {
		var why struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(r.Response, &why)
		ae := &APIError{Method: "join", URL: t.topic, Status: http.StatusBadRequest, Code: why.Reason,
			Message: "the notifier refused to join " + t.topic + ": " + why.Reason}
		switch why.Reason {
		case "unauthorized":
			ae.Status = http.StatusForbidden
			ae.Message += " (another user's events need an admin token)"
		case "not_found":
			ae.Status = http.StatusNotFound
		}
		return ae
	}
	var joined struct {
		ResumeSeq *uint64 `json:"resume_seq"`
	}
	if json.Unmarshal(r.Response, &joined) == nil && joined.ResumeSeq != nil && t.resume == nil {
		t.resume = joined.ResumeSeq
	}
	if !*connected {
		fmt.Fprintf(t.e.stderr, "tailing %s at %s (Ctrl-C stops)\n", t.topic, t.e.notifier)
	}
	*connected = true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case f, ok := <-c.Frames():
			if !ok {
				return fmt.Errorf("connection lost: %w", c.Err())
			}
			if f.Topic != t.topic {
				continue
			}
			switch f.Event {
			case "job":
				if err := t.print(f.Payload); err != nil {
					return err
				}
				if t.count > 0 && t.printed >= t.count {
					return errDone
				}
			case "phx_close", "phx_error":
				return fmt.Errorf("the notifier closed %s: %s", t.topic, f.Payload)
			}
		}
	}
}

func (t *tailer) print(payload json.RawMessage) error {
	var p pushed
	if err := json.Unmarshal(payload, &p); err != nil {
		return fmt.Errorf("undecodable event %s: %w", payload, err)
	}
	if p.ResumeSeq != nil {
		t.resume = p.ResumeSeq
	}
	t.printed++
	if t.e.json() {
		var buf bytes.Buffer
		if err := json.Compact(&buf, payload); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := t.e.stdout.Write(buf.Bytes())
		return err
	}
	s := p.Job
	at := s.UpdatedAt
	if at.IsZero() {
		at = time.Now()
	}
	line := []string{at.UTC().Format("15:04:05.000"), s.ID, s.User, s.Kind, cell(p.Type), string(s.Status),
		strconv.Itoa(s.Progress) + "%", "attempt=" + strconv.Itoa(s.Attempt), "seq=" + strconv.FormatUint(p.Seq, 10)}
	if s.Error != "" {
		line = append(line, "error="+strconv.Quote(s.Error))
	}
	_, err := fmt.Fprintln(t.e.stdout, strings.Join(line, "  "))
	return err
}
