package provider

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// replicateStreamLine bounds one line of a prediction's stream; a longer
// one ends the stream (the wait goes on by webhooks and polls).
const replicateStreamLine = 1 << 20

// errStreamEnded is a stream that closed without a done event.
var errStreamEnded = errors.New("stream closed without a done event")

// readStream reads the prediction's server-sent events at url
// (Replicate's urls.stream, see docs/design.md#the-replicate-provider)
// until done, an error or ctx ends, calling event for each event. It
// returns nil after done; anything else (a non-200, an error event, a cut
// connection) is an error for the caller to log: the stream only
// accelerates a wait, it never decides its outcome.
func (p *replicateProvider) readStream(ctx context.Context, url string, event func(name, data string)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-store")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("answered %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), int(min(p.maxResponse+1, replicateStreamLine)))
	name, data, has := "", strings.Builder{}, false
	for sc.Scan() {
		line := sc.Text()
		if line == "" { // the end of an event
			if has || name != "" {
				if name == "" {
					name = "message"
				}
				event(name, data.String())
				switch name {
				case "done":
					return nil
				case "error":
					return fmt.Errorf("error event: %s", snippet([]byte(data.String())))
				}
			}
			name, has = "", false
			data.Reset()
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			name = value
		case "data":
			if has {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			has = true
		}
		// "id", "retry" and comments (":...") are not needed: a stream is
		// read once, never resumed with Last-Event-ID.
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errStreamEnded
}

// streamPreview is the preview of an output event's data: the value when
// it is JSON, else the text as a JSON string (a URL, a chunk of text).
func streamPreview(data string) json.RawMessage {
	if data == "" {
		return nil
	}
	if json.Valid([]byte(data)) {
		return json.RawMessage(data)
	}
	b, _ := json.Marshal(data)
	return b
}

// stream is the goroutine of a wait that reads urls.stream: output events
// become previews and done polls at once, both through the stepping
// goroutine (serially with the other steps). It ends when the stream does
// or when finish cancels it; finish waits for it, so it never outlives
// the wait.
func (w *replicateWait) stream(ctx context.Context, url string) {
	defer close(w.streamEnded)
	err := w.p.readStream(ctx, url, func(name, data string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		switch name {
		case "output":
			if pv := streamPreview(data); pv != nil {
				w.preview = pv
				w.kickLocked()
			}
		case "done", "error":
			// The outcome is the prediction's: read it now (after the
			// poll under way, if any, which may have missed the end).
			w.pollNow = true
			w.kickLocked()
		}
	})
	if err != nil && ctx.Err() == nil {
		w.p.log.Warn("replicate: prediction stream ended without done; the wait goes on by webhooks and polls",
			"provider", w.p.name, "prediction", w.id, "err", err)
	}
}
