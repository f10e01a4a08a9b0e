package notifier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/pkg/envelope"
)

// sseTokenExpired is the event that ends an SSE stream at its token's expiry.
const sseTokenExpired = "token_expired"

// sseDevice is the presence meta "device" of an SSE watcher.
const sseDevice = "sse"

// sseSink buffers one SSE stream's events; the handler goroutine writes them.
type sseSink struct {
	mu   sync.Mutex
	ch   chan *event
	cut  chan struct{} // closed when the client fell too far behind
	done bool
}

func (k *sseSink) deliver(sb *sub, ev *event) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.done {
		return
	}
	if sb.replaying {
		if !sb.hold(ev, 4*cap(k.ch)) {
			k.overflow()
		}
		return
	}
	if !sb.fresh(ev) {
		return
	}
	select {
	case k.ch <- ev:
	default:
		k.overflow()
	}
}

// end closes the stream when the server ends the topic (during the join:
// after the join's events); an EventSource reconnects with Last-Event-ID
// and misses nothing.
func (k *sseSink) end(sb *sub, event string, payload []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.done {
		return
	}
	if sb.replaying {
		sb.ended = &serverEnd{event: event, payload: payload}
	}
	k.overflow()
}

func (k *sseSink) overflow() {
	k.done = true
	close(k.cut)
}

// serveSSE is GET /v1/jobs/{id}/events: the job's events as Server-Sent
// Events (id = job seq, event = short type, data = the push payload), from
// Last-Event-ID on, ending after the terminal event.
func (s *Service) serveSSE(w http.ResponseWriter, r *http.Request) {
	p, err := s.authenticate(bearerToken(r))
	if err != nil {
		httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", "missing, invalid or expired token")
		return
	}
	id := r.PathValue("id")
	if err := envelope.ValidateID("id", id); err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "invalid_id", fieldMessage(err))
		return
	}
	var lastSeq *uint64
	if h := r.Header.Get("Last-Event-ID"); h != "" {
		n, err := strconv.ParseUint(h, 10, 64)
		if err != nil {
			httpx.WriteError(w, http.StatusBadRequest, "invalid_last_event_id", "Last-Event-ID must be a job seq")
			return
		}
		lastSeq = &n
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		httpx.WriteError(w, http.StatusServiceUnavailable, "shutting_down", "notifier is shutting down")
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	k := &sseSink{ch: make(chan *event, s.cfg.SendQueue), cut: make(chan struct{})}
	sb := &sub{topic: "job:" + id, kind: kindJob, sink: k, replaying: true}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	res := s.openJob(ctx, p, sb, id, lastSeq)
	cancel()
	switch res.reason {
	case "":
	case reasonNotFound:
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no such job")
		return
	case reasonUnauthorized:
		httpx.WriteError(w, http.StatusForbidden, "forbidden", "the job belongs to another user")
		return
	default:
		httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", "cannot read the job now")
		return
	}
	defer s.hub.remove(sb)
	defer func() { k.mu.Lock(); k.done = true; k.mu.Unlock() }()

	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{}) // a long-lived response
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	write := func(ev *event) bool {
		data, ok := sseData(ev.payload)
		if !ok {
			s.log.Warn("SSE: an event's data does not fit on one line; ending the stream", "topic", sb.topic, "seq", ev.jobSeq)
			return false
		}
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.jobSeq, ev.short, data)
		if err == nil {
			err = rc.Flush()
		}
		if err == nil && !ev.at.IsZero() {
			s.m.pushes.Inc()
		}
		return err == nil
	}
	if lastSeq == nil || len(res.replay) == 0 && *lastSeq < res.snapshot.Seq {
		// No replay: start from the current state.
		ev := snapshotEvent(*res.snapshot)
		if !write(ev) || ev.terminal {
			return
		}
	}
	var queue []*event
	k.mu.Lock()
	end := sb.handOver(res.replay, nil, func(ev *event) { queue = append(queue, ev) })
	// From here deliver writes sb.last under k.mu: read it now.
	sent := sb.last
	k.mu.Unlock()
	for _, ev := range queue {
		if !write(ev) || ev.terminal {
			return
		}
	}
	if end != nil {
		return // the server ended the topic during the join
	}
	if res.snapshot.Status.Terminal() && sent >= res.snapshot.Seq {
		return
	}
	// A watcher whose stream stays open is present on job:<id> like a
	// WebSocket watcher, device "sse", until the stream ends
	// (docs/design.md#sse-watchers-in-presence). It never gets presence
	// frames: SSE carries the job's events only.
	s.presence.track(sb, presenceKey(p), localConn{onlineAt: time.Now().UnixMilli(), device: sseDevice}, nil, false)
	defer s.presence.untrack(sb)
	ping := time.NewTicker(25 * time.Second)
	defer ping.Stop()
	// The stream ends when the token does, with a token_expired event: the
	// app opens a new stream with a fresh token and Last-Event-ID
	// (docs/phoenix-protocol.md#12-token-expiry).
	var expired <-chan time.Time
	if !p.Expires.IsZero() {
		t := time.NewTimer(time.Until(p.Expires))
		defer t.Stop()
		expired = t.C
	}
	for {
		select {
		case <-expired:
			_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if _, err := fmt.Fprintf(w, "event: %s\ndata: {\"reason\":%q}\n\n", sseTokenExpired, disconnectTokenExpired.reason); err == nil {
				_ = rc.Flush()
			}
			s.countDisconnect(disconnectTokenExpired)
			return
		case ev := <-k.ch:
			if !write(ev) || ev.terminal {
				return
			}
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-k.cut:
			return
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		}
	}
}

// snapshotEvent is a push payload built from a stored snapshot.
func snapshotEvent(snap envelope.Snapshot) *event {
	data, _ := json.Marshal(snap) // a validated snapshot always marshals
	head := envelope.EventHead{Type: jobstore.EventTypeOf(snap), Data: data, ID: snap.ID, Seq: snap.Seq, Status: snap.Status}
	return newJobEvent(head, 0, "")
}

// sseData returns payload as the one line an SSE data: field holds. A
// payload is JSON, and JSON holds a line break only as whitespace between
// tokens, which compacting drops; an event published raw to events.* (an
// admin may) can be pretty-printed, and a second line would be taken by the
// client as a field of its own, cutting the event's data. ok is false for
// a payload that still would not fit (not JSON: never sent).
func sseData(payload []byte) (data []byte, ok bool) {
	if !bytes.ContainsAny(payload, "\r\n") {
		return payload, true
	}
	var b bytes.Buffer
	if json.Compact(&b, payload) != nil || bytes.ContainsAny(b.Bytes(), "\r\n") {
		return nil, false
	}
	return b.Bytes(), true
}

// fieldMessage renders an envelope.FieldError as "<field>: <rule>", once:
// "id: character 'Ä' at 0 is not allowed (...)", without the envelope's
// sentinel text in front.
func fieldMessage(err error) string {
	var fe *envelope.FieldError
	if errors.As(err, &fe) && fe.Msg != "" {
		return fe.Field + ": " + fe.Msg
	}
	return err.Error()
}
