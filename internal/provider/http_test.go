package provider_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// newHTTP starts a real local server with h and returns an http provider
// pointed at it. mutate may adjust the config.
func newHTTP(t *testing.T, h http.HandlerFunc, mutate func(*provider.HTTPConfig)) provider.Provider {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := provider.HTTPConfig{URL: srv.URL + "/run", Client: srv.Client(), Timeout: 5 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := provider.NewHTTP(cfg)
	if err != nil {
		t.Fatalf("NewHTTP: %v", err)
	}
	return p
}

func httpJob() envelope.Job {
	return envelope.Job{ID: "job-1", User: "user-1", Kind: "image", Priority: "high",
		Input: json.RawMessage(`{"prompt":"a cat"}`)}
}

func callHTTP(t *testing.T, p provider.Provider, progress func(int)) (json.RawMessage, error) {
	t.Helper()
	return p.Call(context.Background(), provider.Request{Job: httpJob(), Attempt: 3, Progress: progress})
}

func TestHTTPRequestShape(t *testing.T) {
	type seen struct {
		method, path, ctype, auth string
		body                      map[string]any
	}
	got := make(chan seen, 1)
	p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		var s seen
		s.method, s.path, s.ctype, s.auth = r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Authorization")
		_ = json.NewDecoder(r.Body).Decode(&s.body)
		got <- s
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, ` {"url":"https://cdn/x.png"} `)
	}, func(c *provider.HTTPConfig) {
		c.Header = http.Header{"Authorization": {"Bearer s3cret"}}
	})
	out, err := callHTTP(t, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `{"url":"https://cdn/x.png"}` {
		t.Errorf("result = %s", out)
	}
	s := <-got
	if s.method != http.MethodPost || s.path != "/run" || s.ctype != "application/json" || s.auth != "Bearer s3cret" {
		t.Errorf("request = %s %s, content-type %q, authorization %q", s.method, s.path, s.ctype, s.auth)
	}
	b, _ := json.Marshal(s.body)
	want := `{"attempt":3,"input":{"prompt":"a cat"},"job":{"id":"job-1","kind":"image","priority":"high","user":"user-1"}}`
	if string(b) != want {
		t.Errorf("body = %s\nwant   %s", b, want)
	}
}

func TestHTTPEmptyInputIsObject(t *testing.T) {
	got := make(chan string, 1)
	p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Input json.RawMessage }
		_ = json.NewDecoder(r.Body).Decode(&body)
		got <- string(body.Input)
		_, _ = io.WriteString(w, `{}`)
	}, nil)
	j := httpJob()
	j.Input = nil
	if _, err := p.Call(context.Background(), provider.Request{Job: j, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if in := <-got; in != `{}` {
		t.Errorf("input = %s, want {}", in)
	}
}

func TestHTTPStatusClassification(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		body       string
		terminal   bool
		hint       time.Duration
	}{
		{"500", 500, "", `{"error":"boom"}`, false, 0},
		{"502", 502, "", `bad gateway`, false, 0},
		{"503 Retry-After seconds", 503, "2", ``, false, 2 * time.Second},
		{"429 Retry-After seconds", 429, "7", `slow down`, false, 7 * time.Second},
		{"429 Retry-After HTTP-date", 429, now.Add(90 * time.Second).Format(http.TimeFormat), ``, false, 90 * time.Second},
		{"429 Retry-After in the past", 429, now.Add(-time.Minute).Format(http.TimeFormat), ``, false, 0},
		{"429 Retry-After garbage", 429, "soon", ``, false, 0},
		{"408", 408, "", ``, false, 0},
		{"400", 400, "", `{"error":{"message":"prompt too long"}}`, true, 0},
		{"401", 401, "", `no token`, true, 0},
		{"404", 404, "", ``, true, 0},
		{"422", 422, "", `unprocessable`, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}, func(c *provider.HTTPConfig) { c.Now = func() time.Time { return now } })
			_, err := callHTTP(t, p, nil)
			var se *provider.StatusError
			if !errors.As(err, &se) || se.StatusCode != tc.status {
				t.Fatalf("err = %v, want a *StatusError %d", err, tc.status)
			}
			if flow.IsTerminal(err) != tc.terminal {
				t.Errorf("IsTerminal(%v) = %v, want %v", err, !tc.terminal, tc.terminal)
			}
			hint, ok := flow.RetryAfterHint(err)
			if hint != tc.hint || ok != (tc.hint > 0) {
				t.Errorf("RetryAfterHint = %s, %v; want %s", hint, ok, tc.hint)
			}
			if tc.body != "" && !strings.Contains(err.Error(), tc.body) {
				t.Errorf("error %q does not carry the body snippet %q", err, tc.body)
			}
		})
	}
}

func TestHTTPErrorSnippetIsBounded(t *testing.T) {
	p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		_, _ = io.WriteString(w, "line1\nline2\x00"+strings.Repeat("x", 10000))
	}, nil)
	_, err := callHTTP(t, p, nil)
	var se *provider.StatusError
	if !errors.As(err, &se) || !flow.IsTerminal(err) {
		t.Fatalf("err = %v", err)
	}
	if len(se.Body) > 600 || strings.ContainsAny(se.Body, "\n\x00") || !strings.HasSuffix(se.Body, "…") {
		t.Errorf("snippet not bounded/sanitised: %d bytes %q", len(se.Body), se.Body[:40])
	}
}

func TestHTTPHangingHandlerTimesOut(t *testing.T) {
	p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // so the server notices the client leaving
		<-r.Context().Done()               // hang until the client gives up
	}, func(c *provider.HTTPConfig) { c.Timeout = 100 * time.Millisecond })
	_, err := callHTTP(t, p, nil)
	if !errors.Is(err, provider.ErrTimeout) || flow.IsTerminal(err) {
		t.Fatalf("err = %v, want retryable ErrTimeout", err)
	}
}

func TestHTTPCallerCancelWhileHanging(t *testing.T) {
	p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.Call(ctx, provider.Request{Job: httpJob(), Attempt: 1})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, provider.ErrTimeout) || flow.IsTerminal(err) {
		t.Fatalf("err = %v, want the caller's retryable context.DeadlineExceeded", err)
	}
}

func TestHTTPInvalidJSONIsRetryable(t *testing.T) {
	for _, body := range []string{`{"url":`, `<html>oops</html>`, ``} {
		p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, body)
		}, nil)
		_, err := callHTTP(t, p, nil)
		if !errors.Is(err, provider.ErrInvalidResponse) || flow.IsTerminal(err) {
			t.Errorf("body %q: err = %v, want retryable ErrInvalidResponse", body, err)
		}
	}
}

func TestHTTPConnectionResetIsRetryable(t *testing.T) {
	for _, afterHeaders := range []bool{false, true} {
		p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			if afterHeaders {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "100")
				w.WriteHeader(200)
				_, _ = io.WriteString(w, `{"partial":`)
				w.(http.Flusher).Flush()
			}
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // close with RST
			}
			_ = conn.Close()
		}, nil)
		_, err := callHTTP(t, p, nil)
		if err == nil || flow.IsTerminal(err) {
			t.Errorf("afterHeaders=%v: err = %v, want retryable", afterHeaders, err)
		}
	}
}

func TestHTTPConnectionRefusedIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	p, err := provider.NewHTTP(provider.HTTPConfig{URL: "http://" + addr + "/run", Client: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = callHTTP(t, p, nil)
	if err == nil || flow.IsTerminal(err) {
		t.Fatalf("err = %v, want retryable", err)
	}
}

// A success body over MaxResponse is terminal: the result could not be
// stored, and the same input would produce it again.
func TestHTTPResponseTooLargeIsTerminal(t *testing.T) {
	big := `{"blob":"` + strings.Repeat("a", 2000) + `"}`
	for _, chunked := range []bool{false, true} {
		p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			if !chunked {
				w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			}
			_, _ = io.WriteString(w, big[:100])
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, big[100:])
		}, func(c *provider.HTTPConfig) { c.MaxResponse = 1024 })
		_, err := callHTTP(t, p, nil)
		if !errors.Is(err, provider.ErrResponseTooLarge) || !flow.IsTerminal(err) {
			t.Errorf("chunked=%v: err = %v, want terminal ErrResponseTooLarge", chunked, err)
		}
	}
	// Exactly at the limit is fine.
	p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, big)
	}, func(c *provider.HTTPConfig) { c.MaxResponse = int64(len(big)) })
	if _, err := callHTTP(t, p, nil); err != nil {
		t.Errorf("body at the limit: %v", err)
	}
}

func ndjson(lines ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson; charset=utf-8")
		for _, l := range lines {
			_, _ = io.WriteString(w, l+"\n")
			w.(http.Flusher).Flush()
		}
	}
}

func TestHTTPStreamProgress(t *testing.T) {
	p := newHTTP(t, ndjson(`{"progress":10}`, ``, `{"progress":-5}`, `{"progress":50.7}`, `{"log":"ignored"}`,
		`{"progress":40}`, `{"progress":250}`, `{"result":{"url":"u"}}`, `{"progress":1}`), nil)
	var got []int
	out, err := callHTTP(t, p, func(pct int) { got = append(got, pct) })
	if err != nil || string(out) != `{"url":"u"}` {
		t.Fatalf("= %s, %v", out, err)
	}
	if want := []int{10, 50, 100}; !equalInts(got, want) {
		t.Errorf("progress = %v, want %v (clamped, never backwards)", got, want)
	}
}

func TestHTTPStreamEndings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lines    []string
		sentinel error
		terminal bool
	}{
		{"terminal error line", []string{`{"progress":5}`, `{"error":"nsfw prompt","retryable":false}`}, provider.ErrRemote, true},
		{"retryable error line", []string{`{"error":"gpu lost","retryable":true}`}, provider.ErrRemote, false},
		{"no final line", []string{`{"progress":5}`}, provider.ErrInvalidResponse, false},
		{"garbage line", []string{`{"progress":5}`, `not json`}, provider.ErrInvalidResponse, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newHTTP(t, ndjson(tc.lines...), nil)
			_, err := callHTTP(t, p, nil)
			if !errors.Is(err, tc.sentinel) || flow.IsTerminal(err) != tc.terminal {
				t.Fatalf("err = %v, want %v with terminal=%v", err, tc.sentinel, tc.terminal)
			}
		})
	}
}

func TestHTTPStreamLineTooLarge(t *testing.T) {
	p := newHTTP(t, ndjson(`{"progress":5}`, `{"result":"`+strings.Repeat("z", 5000)+`"}`),
		func(c *provider.HTTPConfig) { c.MaxResponse = 1024 })
	_, err := callHTTP(t, p, nil)
	if !errors.Is(err, provider.ErrResponseTooLarge) || !flow.IsTerminal(err) {
		t.Fatalf("err = %v, want terminal ErrResponseTooLarge", err)
	}
}

// In a stream, Timeout is an idle timeout: a stream that stops sending lines
// times out, whatever it sent before.
func TestHTTPStreamIdleTimeout(t *testing.T) {
	p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, `{"progress":5}`+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}, func(c *provider.HTTPConfig) { c.Timeout = 100 * time.Millisecond })
	var got []int
	_, err := callHTTP(t, p, func(pct int) { got = append(got, pct) })
	if !errors.Is(err, provider.ErrTimeout) || flow.IsTerminal(err) {
		t.Fatalf("err = %v, want retryable ErrTimeout", err)
	}
	if !equalInts(got, []int{5}) {
		t.Errorf("progress = %v, want [5]", got)
	}
}

// A stream that keeps reporting is not cut off by Timeout, however long it
// runs in total. The server paces its lines by the client's Timeout divided
// by 10, so the test does not depend on the machine's speed.
func TestHTTPStreamOutlivesTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		for i := 1; i <= 20; i++ { // 20 × timeout/10 = 2 × timeout in total
			_, _ = fmt.Fprintf(w, `{"progress":%d}`+"\n", i*5)
			w.(http.Flusher).Flush()
			select {
			case <-time.After(timeout / 10):
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, `{"result":true}`+"\n")
	}, func(c *provider.HTTPConfig) { c.Timeout = timeout })
	out, err := callHTTP(t, p, nil)
	if err != nil || string(out) != "true" {
		t.Fatalf("= %s, %v; want true", out, err)
	}
}

func TestHTTPConfigValidation(t *testing.T) {
	for _, cfg := range []provider.HTTPConfig{
		{},
		{URL: "ftp://example.com/x"},
		{URL: "/relative"},
		{URL: "http://"},
		{URL: "http://127.0.0.1:1/x", Timeout: -1},
		{URL: "http://127.0.0.1:1/x", MaxResponse: -1},
	} {
		if _, err := provider.NewHTTP(cfg); !errors.Is(err, provider.ErrInvalidConfig) {
			t.Errorf("%+v: err = %v, want ErrInvalidConfig", cfg, err)
		}
	}
	p, err := provider.NewHTTP(provider.HTTPConfig{URL: "https://gpu.example.com/run", Name: "gpu"})
	if err != nil || p.Name() != "gpu" {
		t.Errorf("= %v, %v", p, err)
	}
}
