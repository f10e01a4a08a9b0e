package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

func TestMain(m *testing.M) {
	// JOBS sources SCHEDULED; the server may leave its source setup waiting
	// for a consumer reply up to 30 s after a shutdown (nats-server stream.go).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"))
}

var testSecret = []byte("test-secret-0123456789abcdef")

// harness is one ingest service on a real nats-server and a real HTTP
// server on 127.0.0.1:0.
type harness struct {
	t      *testing.T
	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	svc    *Service
	reg    *prometheus.Registry
	url    string
	client *http.Client
	store  *jobstore.Store
}

func newHarness(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	srv, nc, js := natstest.StartWithStreams(t)
	return newHarnessOn(t, srv, nc, js, mutate)
}

// newHarnessOn is newHarness on a given server and connection (streams
// applied).
func newHarnessOn(t *testing.T, srv *server.Server, nc *nats.Conn, js jetstream.JetStream, mutate func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, srv: srv, nc: nc, js: js, reg: prometheus.NewRegistry()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Listener: ln, Kinds: []string{"image", "video"}, Secret: testSecret, RequestTimeout: 2 * time.Second, Grace: 2 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h.svc, err = New(cfg, nc, js, log, h.reg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	h.url = "http://" + ln.Addr().String()
	tr := &http.Transport{}
	h.client = &http.Client{Transport: &validatingTransport{t: t, next: tr}, Timeout: 10 * time.Second}
	kv, err := jsm.JobStatus(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	h.store = jobstore.New(js, kv, jobstore.Config{Source: "/test"})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()
	t.Cleanup(func() {
		// Idle connections first: one the client dialed but never used
		// (concurrent requests race for connections) is "new" to the
		// server, which waits 5 s before its shutdown counts it idle.
		tr.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		tr.CloseIdleConnections()
	})
	testutil.WaitFor(t, 5*time.Second, func() bool {
		resp, err := tr.RoundTrip(mustRequest(t, http.MethodGet, h.url+"/healthz", nil))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return h
}

func mustRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func token(t *testing.T, user string) string { t.Helper(); return issue(t, user, false) }

func adminToken(t *testing.T, user string) string { t.Helper(); return issue(t, user, true) }

// issue is a token of user for a minute, signed with testSecret.
func issue(t *testing.T, user string, admin bool) string {
	t.Helper()
	tok, err := auth.Issue(testSecret, user, admin, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// response is a finished HTTP answer.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) snapshot(t *testing.T) envelope.Snapshot {
	t.Helper()
	var s envelope.Snapshot
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatalf("snapshot: %v in %s", err, r.Body)
	}
	return s
}

// errorCode decodes the JSON error body strictly and returns its code.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e httpx.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("not a JSON error (%v): %s", err, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q", ct)
	}
	return e.Error.Code
}

type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func bearer(tok string) reqOpt { return withHeader("Authorization", "Bearer "+tok) }

func (h *harness) do(method, path string, body []byte, opts ...reqOpt) response {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := mustRequest(h.t, method, h.url+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	resp, b := testutil.Do(h.t, h.client, req)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (h *harness) submit(tok, body string, opts ...reqOpt) response {
	h.t.Helper()
	return h.do(http.MethodPost, "/v1/jobs", []byte(body), append([]reqOpt{bearer(tok)}, opts...)...)
}

// jobsCount is the number of messages in JOBS.
func (h *harness) jobsCount() uint64 {
	h.t.Helper()
	return h.streamMsgs(streams.Jobs)
}

// kvCount is the number of messages in the job_status bucket's stream.
func (h *harness) kvCount() uint64 {
	h.t.Helper()
	return h.streamMsgs("KV_" + streams.JobStatus)
}

func (h *harness) streamMsgs(name string) uint64 {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), name)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Msgs
}

// metric returns the value of a counter or gauge series whose labels
// include want.
func (h *harness) metric(name string, want map[string]string) float64 {
	h.t.Helper()
	return testutil.GatheredValue(h.t, h.reg, name, want)
}
