package replicatefake_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider/replicatefake"
)

// sse reads a stream's events as "name data" strings until it closes.
func sse(t *testing.T, url, token string) (int, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	var evs []string
	var name string
	var data []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if name != "" {
				evs = append(evs, name+" "+strings.Join(data, "\n"))
			}
			name, data = "", nil
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
	return resp.StatusCode, evs
}

// TestStream: a prediction created with "stream": true has urls.stream,
// which sends the model's outputs as output events while it runs, then
// done; a failed prediction ends with error and done {"reason":"error"};
// a cut stream ends without done; no token is 401; no stream asked, 404.
func TestStream(t *testing.T) {
	model := func(ctx context.Context, r *replicatefake.Run) (json.RawMessage, error) {
		r.Output(json.RawMessage(`["a"]`))
		time.Sleep(20 * time.Millisecond)
		r.Output(json.RawMessage(`["a","b"]`))
		if string(r.Input["fail"]) == `"boom"` {
			return nil, errString("boom")
		}
		return json.RawMessage(`["a","b","c"]`), nil
	}
	f2 := replicatefake.New(replicatefake.Config{Predict: model, Validate: func(map[string]json.RawMessage) error { return nil }})
	srv := httptest.NewServer(f2)
	t.Cleanup(srv.Close)
	t.Cleanup(f2.Close)
	t.Cleanup(srv.Client().CloseIdleConnections)

	code, _, p := do(t, srv, http.MethodPost, "/v1/models/acme/llm/predictions", `{"input":{},"stream":true}`)
	urls, _ := p["urls"].(map[string]any)
	stream, _ := urls["stream"].(string)
	if code != http.StatusCreated || stream == "" {
		t.Fatalf("create = %d %v", code, p)
	}
	if c, _ := sse(t, stream, "wrong"); c != http.StatusUnauthorized {
		t.Errorf("stream with a wrong token = %d, want 401", c)
	}
	_, evs := sse(t, stream, replicatefake.DefaultToken)
	want := []string{`output ["a"]`, `output ["a","b"]`, `output ["a","b","c"]`, `done {}`}
	if strings.Join(evs, "|") != strings.Join(want, "|") {
		t.Errorf("events = %q, want %q", evs, want)
	}

	_, _, p = do(t, srv, http.MethodPost, "/v1/models/acme/llm/predictions", `{"input":{"fail":"boom"},"stream":true}`)
	stream = p["urls"].(map[string]any)["stream"].(string)
	_, evs = sse(t, stream, replicatefake.DefaultToken)
	want = []string{`output ["a"]`, `output ["a","b"]`, `error boom`, `done {"reason":"error"}`}
	if strings.Join(evs, "|") != strings.Join(want, "|") {
		t.Errorf("failed: events = %q, want %q", evs, want)
	}

	f2.CutStreams(1)
	_, evs = sse(t, stream, replicatefake.DefaultToken)
	if len(evs) != 1 || evs[0] != `output ["a"]` {
		t.Errorf("cut after 1: events = %q", evs)
	}
	if n := f2.Streams(); n != 3 {
		t.Errorf("Streams = %d, want 3", n)
	}

	_, _, p = do(t, srv, http.MethodPost, "/v1/models/acme/llm/predictions", `{"input":{}}`)
	if _, ok := p["urls"].(map[string]any)["stream"]; ok {
		t.Errorf("urls.stream without stream: true: %v", p["urls"])
	}
	if c, _ := sse(t, srv.URL+"/v1/streams/"+p["id"].(string), replicatefake.DefaultToken); c != http.StatusNotFound {
		t.Errorf("stream of a prediction that asked none = %d, want 404", c)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
