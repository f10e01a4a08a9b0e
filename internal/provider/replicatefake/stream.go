package replicatefake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// RouteStream is the route of GET /v1/streams/{id}, for a Fault.
const RouteStream = "stream"

// streamEvent is one server-sent event of a prediction's stream.
type streamEvent struct {
	name string // output, error, done
	data string
}

// streamLocked appends an event to the prediction's stream and wakes its
// readers; the caller holds s.mu.
func (p *prediction) streamLocked(name, data string) {
	p.events = append(p.events, streamEvent{name: name, data: data})
	close(p.changed)
	p.changed = make(chan struct{})
}

// endStreamLocked appends the events that end a stream, as Replicate's
// docs/topics/predictions/streaming describes them: the final output when
// the last output event did not carry it, or an error event, then done
// ({} or {"reason":"error"|"canceled"}). The caller holds s.mu.
func (p *prediction) endStreamLocked() {
	switch p.Status {
	case "succeeded":
		if n := len(p.events); len(p.Output) > 0 && (n == 0 || p.events[n-1].data != string(p.Output)) {
			p.streamLocked("output", string(p.Output))
		}
		p.streamLocked("done", "{}")
	case "failed":
		msg := ""
		if p.Error != nil {
			msg = *p.Error
		}
		p.streamLocked("error", msg)
		p.streamLocked("done", `{"reason":"error"}`)
	default:
		p.streamLocked("done", `{"reason":"canceled"}`)
	}
}

// CutStreams makes the next stream request close its connection after n
// events, without a done event: a stream cut mid-way.
func (s *Server) CutStreams(n int) {
	s.mu.Lock()
	s.streamCuts = append(s.streamCuts, n)
	s.mu.Unlock()
}

// Streams is how many GET /v1/streams/{id} requests were answered 200.
func (s *Server) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams
}

// serveStream serves GET /v1/streams/{id} as server-sent events: each
// output the model reports while it runs (Run.Output, its JSON as the
// event's data) as an `output` event, then the end (endStreamLocked), then
// it closes. A reader that comes late gets every event from the start.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	p := s.preds[id]
	cut := -1
	if p != nil && p.URLs["stream"] != "" {
		s.streams++
		if len(s.streamCuts) > 0 {
			cut, s.streamCuts = s.streamCuts[0], s.streamCuts[1:]
		}
	}
	s.mu.Unlock()
	if p == nil || p.URLs["stream"] == "" {
		problem(w, http.StatusNotFound, "Not found", "Not found.")
		return
	}
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	for sent := 0; ; {
		s.mu.Lock()
		events, changed := p.events[sent:], p.changed
		s.mu.Unlock()
		for _, ev := range events {
			if sent == cut {
				return // the connection ends without done
			}
			var b strings.Builder
			fmt.Fprintf(&b, "event: %s\nid: %s:%d\n", ev.name, id, sent)
			for _, line := range strings.Split(ev.data, "\n") {
				b.WriteString("data: " + line + "\n")
			}
			b.WriteString("\n")
			if _, err := w.Write([]byte(b.String())); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
			sent++
			if ev.name == "done" {
				return
			}
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// outputEvent is the data of an output event for out.
func outputEvent(out json.RawMessage) string { return string(out) }
