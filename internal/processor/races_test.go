package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// Races between ingest's DELETE and the processor (issue 18), reproduced
// over HTTP against a real ingest beside the real processor.

var ingestSecret = []byte("races-test-secret-0123456789abcdef")

// front is a real ingest service on the env's nats-server, serving HTTP on
// 127.0.0.1, and a client that keeps its connection alive.
type front struct {
	t      *testing.T
	url    string
	client *http.Client
}

func (e *env) startIngest() *front {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	nc, err := nats.Connect(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	svc, err := ingest.New(ingest.Config{
		Listener: ln, Kinds: []string{"image", "video"}, Secret: ingestSecret,
		RequestTimeout: 2 * time.Second, Grace: 2 * time.Second,
	}, nc, js, testLogger(e.t), prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	tr := &http.Transport{}
	f := &front{t: e.t, url: "http://" + ln.Addr().String(), client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("ingest Run: %v", err)
		}
		tr.CloseIdleConnections()
		nc.Close()
	})
	testutil.WaitFor(e.t, 5*time.Second, func() bool {
		resp, err := f.client.Get(f.url + "/healthz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return f
}

// do sends a request as user and returns the status and body.
func (f *front) do(method, path, user, body string) (int, []byte) {
	f.t.Helper()
	tok, err := auth.Issue(ingestSecret, user, false, time.Minute)
	if err != nil {
		f.t.Fatal(err)
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, b := testutil.Do(f.t, f.client, req)
	return resp.StatusCode, b
}

// submit POSTs a job and returns its id.
func (f *front) submit(user, body string) string {
	f.t.Helper()
	status, b := f.do(http.MethodPost, "/v1/jobs", user, body)
	if status != http.StatusAccepted {
		f.t.Fatalf("POST /v1/jobs: %d %s", status, b)
	}
	return decodeSnap(f.t, b).ID
}

func decodeSnap(t *testing.T, b []byte) envelope.Snapshot {
	t.Helper()
	var s envelope.Snapshot
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&s); err != nil {
		t.Fatalf("snapshot: %v in %s", err, b)
	}
	return s
}

// callLog is a provider that records which jobs it was called for, then
// hands the call to next.
type callLog struct {
	next provider.Provider
	mu   sync.Mutex
	jobs map[string]int
}

func (c *callLog) Name() string { return c.next.Name() }

func (c *callLog) Call(ctx context.Context, req provider.Request) (json.RawMessage, error) {
	c.mu.Lock()
	c.jobs[req.Job.ID]++
	c.mu.Unlock()
	return c.next.Call(ctx, req)
}

func (c *callLog) calls(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.jobs[id]
}

// Issue 18, 1: a DELETE right after the submission, over one keep-alive
// connection, 40 times, with the default deferred start. A job that DELETE
// reports cancelled while queued (attempt 0) was never handed to its
// provider; a job whose provider was called was visibly running, and its
// cancel counted the attempt.
func TestDeleteRightAfterSubmitNeverCallsAQueuedJob(t *testing.T) {
	e := newEnv(t)
	sim, err := provider.NewSim(provider.SimConfig{})
	if err != nil {
		t.Fatal(err)
	}
	log := &callLog{next: sim, jobs: map[string]int{}}
	cfg := withProvider(baseConfig(t), log)
	cfg.StartedDelay = 0 // the default
	cfg.MaxPerUser = 64
	r := e.start(cfg)
	in := e.startIngest()

	const n = 40
	answers := make([]envelope.Snapshot, 0, n)
	for range n {
		id := in.submit("alice", `{"kind":"image","input":{"sim":{"duration_ms":3000}}}`)
		// Jitter, not a wait: the DELETE lands anywhere in the job's
		// first 20 ms, before, while and after the processor takes it.
		time.Sleep(time.Duration(rand.IntN(21)) * time.Millisecond)
		status, b := in.do(http.MethodDelete, "/v1/jobs/"+id, "alice", "")
		if status != http.StatusOK {
			t.Fatalf("DELETE %s: %d %s", id, status, b)
		}
		s := decodeSnap(t, b)
		if s.Status != envelope.StatusCancelled {
			t.Fatalf("DELETE %s answered %+v", id, s)
		}
		answers = append(answers, s)
	}
	e.waitJobsEmpty()

	queued, total := 0, 0
	for _, a := range answers {
		calls := log.calls(a.ID)
		total += calls
		if a.Attempt == 0 {
			queued++
			if calls != 0 {
				t.Errorf("job %s: DELETE answered cancelled while queued (seq %d, attempt 0), but its provider was called %d times",
					a.ID, a.Seq, calls)
			}
		}
		final := e.snapshot(a.ID)
		if final.Status != envelope.StatusCancelled || final.Attempt != a.Attempt {
			t.Errorf("job %s: final %+v, DELETE answered %+v", a.ID, final, a)
		}
		if calls > 0 && final.Attempt < 1 {
			t.Errorf("job %s: provider called, but no attempt counted: %+v", a.ID, final)
		}
		e.checkSeqs(envelope.Job{ID: a.ID, User: a.User}, envelope.StatusCancelled)
	}
	if got := counterValue(t, r, "beamline_provider_calls_total", nil); int(got) != total {
		t.Errorf("beamline_provider_calls_total %v, provider saw %d calls", got, total)
	}
	t.Logf("%d of %d cancelled while queued, %d while running; %d provider calls", queued, n, n-queued, total)
}

// Issue 18, 2: EVENTS refuses writes; the processor stores running (seq 1)
// but cannot announce it; a DELETE must not store seq 2 over it (nobody
// could publish seq 1 afterwards): it is refused while EVENTS refuses, and
// once EVENTS is back the job's events are 1..n, in order, ending
// cancelled.
func TestDeleteAfterUnannouncedChangeLeavesNoGap(t *testing.T) {
	e := newEnv(t)
	cfg := baseConfig(t)
	cfg.StartedDelay = 0 // the default
	e.start(cfg)
	in := e.startIngest()
	restore := e.breakStream("EVENTS")
	id := in.submit("alice", `{"kind":"image","input":{"sim":{"duration_ms":30000}}}`)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		status, b := in.do(http.MethodGet, "/v1/jobs/"+id, "alice", "")
		s := decodeSnap(t, b)
		return status == http.StatusOK && s.Status == envelope.StatusRunning && s.Seq == 1
	}, func() string { return "GET never said running seq 1" })

	status, b := in.do(http.MethodDelete, "/v1/jobs/"+id, "alice", "")
	if status != http.StatusServiceUnavailable || !strings.Contains(string(b), `"unavailable"`) {
		t.Errorf("DELETE while seq 1 cannot be announced: %d %s, want 503 unavailable", status, b)
	}
	restore()
	status, b = in.do(http.MethodDelete, "/v1/jobs/"+id, "alice", "")
	if status != http.StatusOK && status != http.StatusConflict {
		t.Fatalf("DELETE once EVENTS is back: %d %s", status, b)
	}
	e.waitJobsEmpty()
	evs := e.checkSeqs(envelope.Job{ID: id, User: "alice"}, envelope.StatusCancelled)
	if evs[0].Status != envelope.StatusRunning || evs[0].Attempt != 1 {
		t.Fatalf("events %+v, want the stored start of attempt 1 first", evs)
	}
}

// Issue 18, 3: a progress change is stored but EVENTS refuses its event;
// EVENTS comes back and the job is cancelled over HTTP before the run
// announces its progress. The progress event must not land after the
// cancel's: the job's events stay 1, 2, 3 in stream order.
func TestPendingProgressEventNotAfterCancel(t *testing.T) {
	e := newEnv(t)
	prov, stored := e.startReporter()
	in := e.startIngest()
	id := in.submit("alice", `{"kind":"image"}`)
	j := envelope.Job{ID: id, User: "alice"}
	restore := e.breakEventsOnceRunning(j)
	close(prov.report)
	e.waitProgressRefused(stored)
	restore()
	status, b := in.do(http.MethodDelete, "/v1/jobs/"+id, "alice", "")
	if status != http.StatusOK || decodeSnap(t, b).Seq != 3 {
		t.Fatalf("DELETE: %d %s, want cancelled at seq 3", status, b)
	}
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusCancelled)
	if len(evs) != 3 || evs[1].Progress != 50 {
		t.Fatalf("events %+v, want started, progress 50, cancelled", evs)
	}
}

// Issue 18, 3: a change the run stored without learning it did (its
// reply lost to a context that ended, here written behind its back with
// EVENTS refusing its event). The run's next change loses its
// compare-and-set, reads the job and must announce what it read before it
// stores the next seq: no gap.
func TestChangeStoredBehindTheRunIsAnnouncedFirst(t *testing.T) {
	e := newEnv(t)
	g, j := e.startGated()
	testutil.WaitFor(t, 10*time.Second, func() bool { return g.calls.Load() == 1 && len(e.events(j)) == 1 })

	restore := e.breakStream("EVENTS")
	ctx := context.Background()
	snap, rev, err := e.store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.ApplyAt(ctx, snap, rev, envelope.TypeProgress, func(s *envelope.Snapshot) error {
		s.Progress = 30
		return nil
	}); err == nil {
		t.Fatal("progress published with EVENTS refusing publishes")
	}
	restore()
	g.release()
	e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusSucceeded)
	if len(evs) != 3 || evs[1].Progress != 30 {
		t.Fatalf("events %+v, want started, progress 30, succeeded", evs)
	}
}

// Issue 18, 3: the same job id published straight to JOBS on two priority
// subjects reaches two consumers. Only the first runs; the other collides
// with its snapshot (priority, like user and kind) and is dead-lettered,
// never run beside it.
func TestSameJobOnTwoPrioritiesRunsOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{
		{"running written first", -1},
		{"claimed, start deferred", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			g := newGate()
			cfg := withProvider(baseConfig(t), g)
			cfg.StartedDelay = tc.delay
			e.start(cfg)
			j := newJob("alice", "image", envelope.PriorityHigh, nil)
			e.publish(j)
			testutil.WaitFor(t, 10*time.Second, func() bool { return g.calls.Load() == 1 })

			dup := j
			dup.Priority = envelope.PriorityNormal
			m, err := envelope.NewJobMsg(dup, "/test", "")
			if err != nil {
				t.Fatal(err)
			}
			m.Header.Del(envelope.HeaderMsgID) // not the JOBS duplicate it is
			if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			// Settled (termed: JOBS holds only the first again) or run.
			testutil.WaitFor(t, 10*time.Second, func() bool {
				msgs, _ := e.jobsState(envelope.PriorityNormal, "image")
				return msgs == 1 || g.calls.Load() > 1
			})
			if n := g.calls.Load(); n != 1 {
				t.Fatalf("provider called %d times for one job id", n)
			}
			if reason := e.lastDLQ("dlq.image").Header.Get(envelope.HeaderDeadReason); !strings.Contains(reason, "collides") {
				t.Fatalf("DLQ reason %q", reason)
			}
			g.release()
			s := e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
			if s.Priority != envelope.PriorityHigh || s.Attempt != 1 {
				t.Fatalf("snapshot %+v", s)
			}
			e.waitJobsEmpty()
			e.checkSeqs(j, envelope.StatusSucceeded)
		})
	}
}
