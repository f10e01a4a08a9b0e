package provider_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/providertest"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/pkg/flow"
)

// replicateEnv is a fake Replicate API and the transport the providers
// share (closed at cleanup, so no connection goroutine outlives the test).
type replicateEnv struct {
	fake *replicatefake.Server
	url  string
	tr   *http.Transport
}

func newReplicateEnv(t *testing.T, cfg replicatefake.Config) *replicateEnv {
	t.Helper()
	e := &replicateEnv{fake: replicatefake.New(cfg), tr: &http.Transport{}}
	srv := httptest.NewServer(e.fake)
	t.Cleanup(srv.Close)
	t.Cleanup(e.fake.Close) // runs first: ends predictions, then the server closes
	t.Cleanup(e.tr.CloseIdleConnections)
	e.url = srv.URL
	return e
}

func (e *replicateEnv) provider(t *testing.T, mod func(*provider.ReplicateConfig)) provider.Provider {
	t.Helper()
	cfg := provider.ReplicateConfig{
		URL:     e.url,
		Token:   replicatefake.DefaultToken,
		Model:   "black-forest-labs/flux-schnell",
		Client:  &http.Client{Transport: e.tr},
		PollMin: time.Millisecond,
		PollMax: 20 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := provider.NewReplicate(cfg)
	if err != nil {
		t.Fatalf("NewReplicate: %v", err)
	}
	return p
}

// withJob tells the fake's sim model the job and the attempt.
func withJob(c *provider.ReplicateConfig) {
	c.DropKeys = []string{}
	c.ExtraInput = func(req provider.Request) map[string]any {
		return map[string]any{
			replicatefake.InputJob:     req.Job.ID,
			replicatefake.InputAttempt: strconv.Itoa(req.Attempt),
		}
	}
}

// TestReplicateConformance runs the suite against the replicate provider
// talking to a fake Replicate API whose model is the sim provider, once
// polling and once in sync mode (Prefer: wait).
func TestReplicateConformance(t *testing.T) {
	for _, wait := range []time.Duration{0, time.Second} {
		t.Run("wait="+wait.String(), func(t *testing.T) {
			providertest.Run(t, func(t *testing.T, _ providertest.Behaviour) provider.Provider {
				v, p := replicatefake.SimModel()
				e := newReplicateEnv(t, replicatefake.Config{Validate: v, Predict: p})
				return e.provider(t, func(c *provider.ReplicateConfig) {
					withJob(c)
					c.Wait = wait
				})
			})
		})
	}
}

// TestReplicateFileOutput: the job's input minus "sim" is the prediction's
// input, on the model route; the result is the file URL, which the fake
// serves once, byte for byte, and then forgets; exactly one prediction.
func TestReplicateFileOutput(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, nil)
	var progress []int
	out, err := p.Call(context.Background(), provider.Request{
		Job:      cogJob("job-file", `{"prompt":"a lighthouse","duration_ms":20,"steps":4,"sim":{"fail_times":3}}`),
		Attempt:  1,
		Progress: func(pct int) { progress = append(progress, pct) },
	})
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if n := e.fake.Created(`{"duration_ms":20,"prompt":"a lighthouse","steps":4}`); n != 1 {
		t.Fatalf("predictions created for the job's input without sim = %d, want 1 (total %d)", n, e.fake.CreatedTotal())
	}
	ids := e.fake.IDs()
	var pred struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(e.fake.Snapshot(ids[0]), &pred); err != nil || pred.Model != "black-forest-labs/flux-schnell" {
		t.Fatalf("prediction model = %q, %v", pred.Model, err)
	}
	var fileURL string
	if err := json.Unmarshal(out, &fileURL); err != nil || !strings.HasPrefix(fileURL, e.url+"/files/") {
		t.Fatalf("result %s: want a file URL on the fake", out)
	}
	if len(progress) == 0 || progress[len(progress)-1] != 100 {
		t.Errorf("progress = %v, want it to end at 100", progress)
	}
	get := func() (int, []byte) {
		resp, err := http.Get(fileURL)
		if err != nil {
			t.Fatalf("GET %s: %v", fileURL, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, b := get()
	if code != http.StatusOK || string(b) != string(replicatefake.FileBytes(ids[0], 0, 16)) {
		t.Fatalf("first download = %d %x, want the fake's bytes", code, b)
	}
	if code, _ := get(); code != http.StatusNotFound {
		t.Fatalf("second download = %d, want 404: outputs expire", code)
	}
}

// TestReplicateVersionRoute: a version runs through POST /v1/predictions.
func TestReplicateVersionRoute(t *testing.T) {
	const version = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, func(c *provider.ReplicateConfig) {
		c.Model = "replicate/hello-world:" + version
		c.URL = e.url + "/v1/" // taken as the base
	})
	if _, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-v", `{"output":"hello"}`), Attempt: 1}); err != nil {
		t.Fatalf("Call: %v", err)
	}
	var pred struct{ Model, Version string }
	if err := json.Unmarshal(e.fake.Snapshot(e.fake.IDs()[0]), &pred); err != nil || pred.Version != version || pred.Model != "replicate/hello-world" {
		t.Fatalf("prediction = %+v, %v", pred, err)
	}
}

func wantStatus(t *testing.T, err error, code int) {
	t.Helper()
	var se *provider.StatusError
	if !errors.As(err, &se) || se.StatusCode != code {
		t.Fatalf("err = %v, want a *StatusError %d", err, code)
	}
}

func TestReplicateUnauthorizedIsTerminal(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, func(c *provider.ReplicateConfig) { c.Token = "r8_wrong" })
	_, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-401", `{}`), Attempt: 1})
	if !flow.IsTerminal(err) {
		t.Fatalf("err = %v, want terminal", err)
	}
	wantStatus(t, err, http.StatusUnauthorized)
	if !strings.Contains(err.Error(), "authentication token") {
		t.Errorf("err = %v, want Replicate's detail in it", err)
	}
	if n := e.fake.CreatedTotal(); n != 0 {
		t.Fatalf("created %d predictions without a token", n)
	}
}

func TestReplicateInvalidInputIsTerminal(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, nil)
	_, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-422", `{"steps":-1}`), Attempt: 1})
	if !flow.IsTerminal(err) {
		t.Fatalf("err = %v, want terminal", err)
	}
	wantStatus(t, err, http.StatusUnprocessableEntity)
	if !strings.Contains(err.Error(), "input.steps") {
		t.Errorf("err = %v, want the invalid field named", err)
	}
	_, err = p.Call(context.Background(), provider.Request{Job: cogJob("job-arr", `[1]`), Attempt: 1})
	if !flow.IsTerminal(err) {
		t.Fatalf("array input: err = %v, want terminal", err)
	}
}

// TestReplicateThrottled: a 429 on create is waited out (Retry-After) and
// the call succeeds with one prediction; a 429 on a poll too; a throttle
// that outlasts the call is retryable with the wait as its hint.
func TestReplicateThrottled(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, nil)
	e.fake.Inject(replicatefake.Fault{Route: replicatefake.RouteCreate, Status: http.StatusTooManyRequests, RetryAfter: "1"})
	e.fake.Inject(replicatefake.Fault{Route: replicatefake.RouteGet, Status: http.StatusTooManyRequests, Times: 2})
	if _, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-429", `{"beamline_job":"j429","duration_ms":10}`), Attempt: 1}); err != nil {
		t.Fatalf("Call: %v", err)
	}
	if n := e.fake.Created("j429"); n != 1 {
		t.Fatalf("predictions = %d, want 1", n)
	}

	e.fake.Inject(replicatefake.Fault{Route: replicatefake.RouteCreate, Status: http.StatusTooManyRequests, RetryAfter: "30"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := p.Call(ctx, provider.Request{Job: cogJob("job-429b", `{"beamline_job":"j429b"}`), Attempt: 1})
	if err == nil || flow.IsTerminal(err) {
		t.Fatalf("err = %v, want retryable", err)
	}
	if hint, ok := flow.RetryAfterHint(err); !ok || hint < time.Second {
		t.Fatalf("RetryAfterHint = %v, %v; want the rest of Retry-After", hint, ok)
	}
	if n := e.fake.Created("j429b"); n != 0 {
		t.Fatalf("predictions = %d while throttled, want 0", n)
	}
}

// TestReplicateServerErrors: a 5xx on create is retryable and returns at
// once (the create may or may not have happened: not repeated blindly);
// 5xx on polls are ridden out.
func TestReplicateServerErrors(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, nil)
	e.fake.Inject(replicatefake.Fault{Route: replicatefake.RouteCreate, Status: http.StatusServiceUnavailable})
	_, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-503", `{"beamline_job":"j503"}`), Attempt: 1})
	if err == nil || flow.IsTerminal(err) {
		t.Fatalf("err = %v, want retryable", err)
	}
	wantStatus(t, err, http.StatusServiceUnavailable)
	e.fake.Inject(replicatefake.Fault{Route: replicatefake.RouteGet, Status: http.StatusBadGateway, Times: 3})
	if _, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-503", `{"beamline_job":"j503","duration_ms":10}`), Attempt: 2}); err != nil {
		t.Fatalf("Call with 5xx polls: %v", err)
	}
	if n := e.fake.Created("j503"); n != 1 {
		t.Fatalf("predictions = %d, want 1", n)
	}
}

// TestReplicateCancelReachesTheFake: a call whose ctx ends cancels its
// prediction at Replicate.
func TestReplicateCancelReachesTheFake(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	c := goCall(ctx, p, provider.Request{Job: cogJob("job-c", `{"duration_ms":600000}`), Attempt: 1})
	waitFor(t, "the prediction to run", func() bool { return e.fake.Running() == 1 })
	cancel()
	r := recv(t, c)
	if r.err == nil || flow.IsTerminal(r.err) {
		t.Fatalf("err = %v, want retryable", r.err)
	}
	id := e.fake.IDs()[0]
	if e.fake.Cancels(id) != 1 || e.fake.Status(id) != "canceled" {
		t.Fatalf("cancels = %d, status %q; want 1, canceled", e.fake.Cancels(id), e.fake.Status(id))
	}
}

// TestReplicateResume: a handle from Start is awaited by another provider
// (another process after a crash) without a second prediction.
func TestReplicateResume(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	a := e.provider(t, nil).(provider.Resumable)
	req := provider.Request{Job: cogJob("job-r", `{"beamline_job":"jr","duration_ms":30,"output":{"n":1}}`), Attempt: 1}
	h, err := a.Start(context.Background(), req)
	if err != nil || h.ID == "" || !strings.HasPrefix(h.GetURL, e.url) {
		t.Fatalf("Start = %+v, %v", h, err)
	}
	b := e.provider(t, nil).(provider.Resumable)
	out, err := b.Await(context.Background(), h, req)
	if err != nil || string(out) != `{"n":1}` {
		t.Fatalf("Await = %s, %v", out, err)
	}
	if n := e.fake.Created("jr"); n != 1 {
		t.Fatalf("predictions = %d, want 1", n)
	}
	h2, err := a.Start(context.Background(), provider.Request{Job: cogJob("job-r2", `{"duration_ms":600000}`), Attempt: 1})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := b.Cancel(context.Background(), h2); err != nil || e.fake.Cancels(h2.ID) != 1 {
		t.Fatalf("Cancel = %v, cancels %d", err, e.fake.Cancels(h2.ID))
	}
}

// TestReplicateSyncWait: with Wait, a quick prediction is finished in the
// create's answer and never polled.
func TestReplicateSyncWait(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, func(c *provider.ReplicateConfig) { c.Wait = 5 * time.Second })
	out, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-w", `{"output":"done"}`), Attempt: 1})
	if err != nil || string(out) != `"done"` {
		t.Fatalf("Call = %s, %v", out, err)
	}
	if n := e.fake.Polls(); n != 0 {
		t.Fatalf("polls = %d, want 0", n)
	}
}

func TestReplicateFailedPredictionIsRetryable(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, nil)
	_, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-f", `{"fail":"CUDA out of memory"}`), Attempt: 1})
	if err == nil || flow.IsTerminal(err) || !errors.Is(err, provider.ErrRemote) || !strings.Contains(err.Error(), "CUDA out of memory") {
		t.Fatalf("err = %v, want retryable ErrRemote with the model's error", err)
	}
}

// TestReplicateGarbage: answers that are not prediction objects give a
// clear retryable ErrInvalidResponse; one bad poll among good ones does not.
func TestReplicateGarbage(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, nil)
	for _, body := range []string{`<html>bad gateway</html>`, `{"id":"x","status":"exploded"}`, `{"status":"starting"}`, `[]`} {
		e.fake.Inject(replicatefake.Fault{Route: replicatefake.RouteCreate, Body: body})
		_, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-g", `{}`), Attempt: 1})
		if err == nil || flow.IsTerminal(err) || !errors.Is(err, provider.ErrInvalidResponse) {
			t.Fatalf("create answered %s: err = %v, want retryable ErrInvalidResponse", body, err)
		}
	}
	e.fake.Inject(replicatefake.Fault{Route: replicatefake.RouteGet, Body: `{"nonsense":true}`})
	if _, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-g1", `{"duration_ms":20}`), Attempt: 1}); err != nil {
		t.Fatalf("one bad poll: %v", err)
	}
	e.fake.Inject(replicatefake.Fault{Route: replicatefake.RouteGet, Body: `nope`, Times: 100})
	_, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-g2", `{"duration_ms":600000}`), Attempt: 1})
	if err == nil || flow.IsTerminal(err) || !errors.Is(err, provider.ErrInvalidResponse) {
		t.Fatalf("bad polls: err = %v, want retryable ErrInvalidResponse", err)
	}
}

func TestReplicateConfig(t *testing.T) {
	for _, cfg := range []provider.ReplicateConfig{
		{Model: "a/b"},                 // no token
		{Token: "t"},                   // no model
		{Token: "t", Model: "a"},       // not owner/name
		{Token: "t", Model: "A/B"},     // upper case
		{Token: "t", Model: "a/b:xyz"}, // bad version
		{Token: "t", Model: "a/b", URL: "ftp://x"},
		{Token: "t", Model: "a/b", Wait: 2 * time.Minute},
	} {
		if _, err := provider.NewReplicate(cfg); !errors.Is(err, provider.ErrInvalidConfig) {
			t.Errorf("NewReplicate(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
	p, err := provider.New("replicate:black-forest-labs/flux-schnell", provider.Config{Replicate: provider.ReplicateConfig{Token: "t"}})
	if err != nil || p.Name() != "replicate:black-forest-labs/flux-schnell" {
		t.Fatalf("New = %v, %v", p, err)
	}
	if _, err := provider.New("replicate", provider.Config{Replicate: provider.ReplicateConfig{Token: "t"}}); !errors.Is(err, provider.ErrInvalidConfig) {
		t.Fatalf("New(replicate) without a model = %v, want ErrInvalidConfig", err)
	}
	env := map[string]string{provider.EnvReplicateToken: "r8_x"}
	if c := provider.ReplicateConfigFromEnv(func(k string) string { return env[k] }); c.Token != "r8_x" {
		t.Fatalf("token from env = %q", c.Token)
	}
}

func TestReplicateOutputTooLargeIsTerminal(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, func(c *provider.ReplicateConfig) { c.MaxResponse = 64 })
	_, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-big", `{"output":"`+strings.Repeat("x", 200)+`"}`), Attempt: 1})
	if !flow.IsTerminal(err) || !errors.Is(err, provider.ErrResponseTooLarge) {
		t.Fatalf("err = %v, want terminal ErrResponseTooLarge", err)
	}
}

// TestReplicateAwaitUnknownOrForbidden: awaiting a prediction Replicate no
// longer has is retryable (the next attempt creates one); a token refused
// while polling is terminal.
func TestReplicateAwaitUnknownOrForbidden(t *testing.T) {
	e := newReplicateEnv(t, replicatefake.Config{})
	p := e.provider(t, nil).(provider.Resumable)
	_, err := p.Await(context.Background(), provider.Handle{ID: "gone"}, provider.Request{})
	if err == nil || flow.IsTerminal(err) || !errors.Is(err, provider.ErrRemote) {
		t.Fatalf("unknown prediction: err = %v, want retryable ErrRemote", err)
	}
	h, err := p.Start(context.Background(), provider.Request{Job: cogJob("job-a", `{"duration_ms":600000}`), Attempt: 1})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	bad := e.provider(t, func(c *provider.ReplicateConfig) { c.Token = "r8_revoked" }).(provider.Resumable)
	if _, err := bad.Await(context.Background(), h, provider.Request{}); !flow.IsTerminal(err) {
		t.Fatalf("revoked token: err = %v, want terminal", err)
	}
	if err := p.Cancel(context.Background(), h); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
}

// replicateHooks serves an in-memory webhook source the fake can reach.
func replicateHooks(t *testing.T) (*providertest.Webhooks, *http.Client) {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	h := providertest.NewWebhooks(srv.URL, []byte("test-key"))
	mux.Handle("/v1/webhooks/", h)
	return h, srv.Client()
}

// TestReplicateWebhookEndsTheWait: with webhooks the call does not poll
// before Quiet: the completed webhook ends it (polling is made too slow to).
// A webhook about another prediction is not taken for this one's.
func TestReplicateWebhookEndsTheWait(t *testing.T) {
	hooks, client := replicateHooks(t)
	e := newReplicateEnv(t, replicatefake.Config{Client: client})
	p := e.provider(t, func(c *provider.ReplicateConfig) {
		c.Webhooks = hooks
		c.Quiet = time.Hour
	})
	job := cogJob("job-hook", `{"duration_ms":30,"output":"painted"}`)
	// A stale final delivery of another prediction of this job.
	hooks.Deliver("replicate", job.ID, provider.WebhookDelivery{Final: true, Body: []byte(`{"id":"other","status":"succeeded","output":"stale"}`)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := p.Call(ctx, provider.Request{Job: job, Attempt: 1})
	if err != nil || string(out) != `"painted"` {
		t.Fatalf("call = %s, %v", out, err)
	}
	if n := e.fake.Polls(); n != 0 {
		t.Fatalf("polls = %d, want 0: the webhook ends the wait", n)
	}
}

// TestReplicateWebhookLostFallsBackToPolls: every webhook is lost; after
// Quiet the call polls and ends.
func TestReplicateWebhookLostFallsBackToPolls(t *testing.T) {
	hooks, client := replicateHooks(t)
	hooks.Drop = func(string, string, bool) bool { return true }
	e := newReplicateEnv(t, replicatefake.Config{Client: client})
	p := e.provider(t, func(c *provider.ReplicateConfig) {
		c.Webhooks = hooks
		c.Quiet = 50 * time.Millisecond
	})
	out, err := p.Call(context.Background(), provider.Request{Job: cogJob("job-lost-hook", `{"duration_ms":30,"output":"polled"}`), Attempt: 1})
	if err != nil || string(out) != `"polled"` {
		t.Fatalf("call = %s, %v", out, err)
	}
	if e.fake.Polls() == 0 {
		t.Fatal("no poll: the call ended without its webhook?")
	}
}
