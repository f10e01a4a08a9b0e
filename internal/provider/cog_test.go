package provider_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/cogfake"
	"github.com/beamline/beamline/internal/provider/providertest"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// cogEnv is one or more fake Cog servers, optionally a webhook receiver,
// and the http transport the providers share (closed at cleanup, so no
// connection goroutine outlives the test).
type cogEnv struct {
	fakes []*cogfake.Server
	urls  []string
	hooks *providertest.Webhooks
	tr    *http.Transport
}

func newCogEnv(t *testing.T, n int, webhooks bool, fcfg cogfake.Config) *cogEnv {
	t.Helper()
	e := &cogEnv{tr: &http.Transport{}}
	t.Cleanup(e.tr.CloseIdleConnections)
	if webhooks {
		mux := http.NewServeMux()
		hookSrv := httptest.NewServer(mux)
		t.Cleanup(hookSrv.Close)
		h := providertest.NewWebhooks(hookSrv.URL, []byte("test-key"))
		mux.Handle("/v1/webhooks/", h)
		e.hooks = h
		if fcfg.Client == nil {
			fcfg.Client = hookSrv.Client()
		}
	}
	for range n {
		f := cogfake.New(fcfg)
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		t.Cleanup(f.Close) // runs first: ends predictions, then the server closes
		e.fakes = append(e.fakes, f)
		e.urls = append(e.urls, srv.URL)
	}
	return e
}

func (e *cogEnv) provider(t *testing.T, mod func(*provider.CogConfig)) provider.Provider {
	t.Helper()
	cfg := provider.CogConfig{
		URLs:       e.urls,
		Client:     &http.Client{Transport: e.tr},
		BackoffMin: time.Millisecond,
		BackoffMax: 20 * time.Millisecond,
		Quiet:      200 * time.Millisecond,
	}
	if e.hooks != nil {
		cfg.Webhooks = e.hooks
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := provider.NewCog(cfg)
	if err != nil {
		t.Fatalf("NewCog: %v", err)
	}
	return p
}

func simFakeConfig(slots int) cogfake.Config {
	v, p := cogfake.SimModel()
	return cogfake.Config{Slots: slots, Validate: v, Predict: p}
}

// TestCogConformance runs the suite against the cog provider talking to a
// fake Cog server whose model is the sim provider (input.sim is kept), in
// both ways of learning a prediction's outcome.
func TestCogConformance(t *testing.T) {
	for _, webhooks := range []bool{false, true} {
		t.Run(fmt.Sprintf("webhooks=%v", webhooks), func(t *testing.T) {
			providertest.Run(t, func(t *testing.T, _ providertest.Behaviour) provider.Provider {
				e := newCogEnv(t, 1, webhooks, simFakeConfig(32))
				return e.provider(t, func(c *provider.CogConfig) { c.DropKeys = []string{} })
			})
		})
	}
}

func cogJob(id, input string) envelope.Job {
	return envelope.Job{ID: id, User: "u1", Kind: "video", Priority: "normal", Input: json.RawMessage(input)}
}

type callResult struct {
	out json.RawMessage
	err error
}

func goCall(ctx context.Context, p provider.Provider, req provider.Request) <-chan callResult {
	c := make(chan callResult, 1)
	go func() {
		out, err := p.Call(ctx, req)
		c <- callResult{out, err}
	}()
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func recv(t *testing.T, c <-chan callResult) callResult {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("Call did not return")
		return callResult{}
	}
}

func TestCogPredictionIDIsDeterministic(t *testing.T) {
	a := provider.CogPredictionID("job-1", 1)
	if a != provider.CogPredictionID("job-1", 1) || len(a) != 26 || strings.ToLower(a) != a {
		t.Fatalf("id %q: want 26 stable lower-case characters", a)
	}
	if a == provider.CogPredictionID("job-1", 2) || a == provider.CogPredictionID("job-2", 1) {
		t.Fatal("ids of different attempts or jobs collide")
	}
}

// TestCogSendsModelInput: the job's input minus Beamline's keys is the
// prediction's input; the job and attempt travel in the context; a file
// output (data: URL) is the result.
func TestCogSendsModelInput(t *testing.T) {
	var mu sync.Mutex
	var gotInput map[string]json.RawMessage
	var gotCtx map[string]string
	e := newCogEnv(t, 1, false, cogfake.Config{Validate: func(in map[string]json.RawMessage, c map[string]string) error {
		mu.Lock()
		gotInput, gotCtx = in, c
		mu.Unlock()
		return cogfake.DefaultValidate(in, c)
	}})
	p := e.provider(t, nil)
	out, err := p.Call(context.Background(), provider.Request{
		Job: cogJob("j-in", `{"prompt":"an onion","sim":{"duration_ms":5}}`), Attempt: 2,
	})
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	var url string
	if err := json.Unmarshal(out, &url); err != nil || !strings.HasPrefix(url, "data:text/plain;base64,") {
		t.Fatalf("result %s, want a data: URL string", out)
	}
	id := provider.CogPredictionID("j-in", 2)
	if url != cogfake.DataURL(id, nil) {
		t.Errorf("result %s is not what the fake produced", url)
	}
	mu.Lock()
	defer mu.Unlock()
	if _, ok := gotInput["sim"]; ok || string(gotInput["prompt"]) != `"an onion"` {
		t.Errorf("model input = %v, want prompt without sim", gotInput)
	}
	if gotCtx[provider.CogContextJob] != "j-in" || gotCtx[provider.CogContextAttempt] != "2" {
		t.Errorf("context = %v", gotCtx)
	}
	if n := e.fakes[0].Started(id); n != 1 {
		t.Errorf("predictions started = %d, want 1", n)
	}

	_, err = p.Call(context.Background(), provider.Request{Job: cogJob("j-arr", `[1,2]`), Attempt: 1})
	if !flow.IsTerminal(err) {
		t.Errorf("non-object input: err = %v, want terminal", err)
	}
}

// TestCogBackpressure: with every slot busy Cog answers 409; the call
// waits for a slot instead of failing, and starts exactly one prediction.
func TestCogBackpressure(t *testing.T) {
	for _, webhooks := range []bool{false, true} {
		t.Run(fmt.Sprintf("webhooks=%v", webhooks), func(t *testing.T) {
			e := newCogEnv(t, 1, webhooks, cogfake.Config{Slots: 1})
			p := e.provider(t, nil)
			long := goCall(context.Background(), p, provider.Request{Job: cogJob("j-long", `{"duration_ms":300}`), Attempt: 1})
			waitFor(t, "the long prediction to run", func() bool { return e.fakes[0].InFlight() == 1 })
			short := goCall(context.Background(), p, provider.Request{Job: cogJob("j-short", `{"output":"ok"}`), Attempt: 1})
			waitFor(t, "a 409", func() bool { return e.fakes[0].Conflicts() > 0 })
			if r := recv(t, long); r.err != nil {
				t.Fatalf("long: %v", r.err)
			}
			r := recv(t, short)
			if r.err != nil || string(r.out) != `"ok"` {
				t.Fatalf("short = %s, %v; want \"ok\" after waiting for the slot", r.out, r.err)
			}
			if n := e.fakes[0].Started(provider.CogPredictionID("j-short", 1)); n != 1 {
				t.Errorf("short predictions started = %d, want 1", n)
			}
		})
	}
}

// TestCogBackpressureBoundedByCtx: a call waiting for a slot returns a
// retryable error when its ctx ends, having started nothing.
func TestCogBackpressureBoundedByCtx(t *testing.T) {
	e := newCogEnv(t, 1, false, cogfake.Config{Slots: 1})
	p := e.provider(t, nil)
	long := goCall(context.Background(), p, provider.Request{Job: cogJob("j-long", `{"duration_ms":60000}`), Attempt: 1})
	waitFor(t, "the long prediction to run", func() bool { return e.fakes[0].InFlight() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	waiting := goCall(ctx, p, provider.Request{Job: cogJob("j-wait", `{}`), Attempt: 1})
	waitFor(t, "a 409", func() bool { return e.fakes[0].Conflicts() > 0 })
	cancel()
	if r := recv(t, waiting); r.err == nil || flow.IsTerminal(r.err) {
		t.Fatalf("waiting call = %v, want retryable", r.err)
	}
	if n := e.fakes[0].Started(provider.CogPredictionID("j-wait", 1)); n != 0 {
		t.Errorf("predictions started for the waiting job = %d, want 0", n)
	}
	e.fakes[0].Close() // ends the long prediction
	if r := recv(t, long); r.err == nil {
		t.Fatal("long call succeeded after its server cancelled it")
	}
}

// TestCogReattach simulates a processor that died while its prediction
// ran: a second process (a new provider, no shared memory) calls the same
// job and attempt. It re-attaches to the running prediction and gets its
// outcome: one prediction in all. Then a third call, after the end, gets
// the stored outcome without starting anything.
func TestCogReattach(t *testing.T) {
	e := newCogEnv(t, 1, true, cogfake.Config{Slots: 4})
	job := cogJob("j-crash", `{"duration_ms":300,"output":{"frames":3}}`)
	id := provider.CogPredictionID(job.ID, 1)

	// A long Quiet: the outcome must come from the webhook, with no re-PUT
	// racing the prediction's end.
	long := func(c *provider.CogConfig) { c.Quiet = time.Minute }
	dead := e.provider(t, long)
	first := goCall(context.Background(), dead, provider.Request{Job: job, Attempt: 1})
	waitFor(t, "the prediction to run", func() bool { return e.fakes[0].InFlight() == 1 })

	second := e.provider(t, long)
	r := recv(t, goCall(context.Background(), second, provider.Request{Job: job, Attempt: 1}))
	if r.err != nil || string(r.out) != `{"frames":3}` {
		t.Fatalf("re-attached call = %s, %v", r.out, r.err)
	}
	if r := recv(t, first); r.err != nil {
		t.Fatalf("first call: %v", r.err)
	}
	if n := e.fakes[0].Started(id); n != 1 {
		t.Fatalf("predictions started = %d, want exactly 1", n)
	}
}

// TestCogReattachAfterEnd: the completed webhook arrived while no call
// waited (the processor was down); the redelivered call uses it and starts
// nothing.
func TestCogReattachAfterEnd(t *testing.T) {
	e := newCogEnv(t, 1, true, cogfake.Config{Slots: 4})
	job := cogJob("j-late", `{"duration_ms":50,"output":"done"}`)
	id := provider.CogPredictionID(job.ID, 1)
	ctx, cancel := context.WithCancel(context.Background())
	dying := e.provider(t, func(c *provider.CogConfig) {
		// This process "dies" without cancelling: its client cannot reach
		// the cancel endpoint.
		c.Client = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if strings.HasSuffix(r.URL.Path, "/cancel") {
				return nil, errors.New("process is dead")
			}
			return e.tr.RoundTrip(r)
		})}
	})
	first := goCall(ctx, dying, provider.Request{Job: job, Attempt: 1})
	waitFor(t, "the prediction to run", func() bool { return e.fakes[0].InFlight() == 1 })
	cancel()
	recv(t, first)
	waitFor(t, "the completed webhook", func() bool { return e.fakes[0].CompletedWebhooks() == 1 })

	r := recv(t, goCall(context.Background(), e.provider(t, nil), provider.Request{Job: job, Attempt: 1}))
	if r.err != nil || string(r.out) != `"done"` {
		t.Fatalf("redelivered call = %s, %v", r.out, r.err)
	}
	if n := e.fakes[0].Started(id); n != 1 {
		t.Fatalf("predictions started = %d, want exactly 1", n)
	}
}

// TestCogWebhookLost: Cog's webhooks never arrive. After Quiet the call
// re-attaches; Cog has forgotten the ended prediction and runs it again,
// answering synchronously: the call ends, with the one extra prediction the
// design allows for a lost webhook (and no more).
func TestCogWebhookLost(t *testing.T) {
	partitioned := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("network partition")
	})}
	e := newCogEnv(t, 1, true, cogfake.Config{Slots: 2, Client: partitioned})
	f := e.fakes[0]

	job := cogJob("j-lost", `{"duration_ms":20,"output":"v"}`)
	r := recv(t, goCall(context.Background(), e.provider(t, nil), provider.Request{Job: job, Attempt: 1}))
	if r.err != nil || string(r.out) != `"v"` {
		t.Fatalf("call = %s, %v", r.out, r.err)
	}
	if n := f.Started(provider.CogPredictionID(job.ID, 1)); n != 2 {
		t.Fatalf("predictions started = %d, want 2 (the first one's outcome was lost)", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestCogCancelReachesServer: ending the call's ctx cancels the remote
// prediction.
func TestCogCancelReachesServer(t *testing.T) {
	for _, webhooks := range []bool{false, true} {
		t.Run(fmt.Sprintf("webhooks=%v", webhooks), func(t *testing.T) {
			e := newCogEnv(t, 1, webhooks, cogfake.Config{})
			p := e.provider(t, nil)
			job := cogJob("j-cancel", `{"duration_ms":600000}`)
			ctx, cancel := context.WithCancel(context.Background())
			c := goCall(ctx, p, provider.Request{Job: job, Attempt: 1})
			waitFor(t, "the prediction to run", func() bool { return e.fakes[0].InFlight() == 1 })
			cancel()
			if r := recv(t, c); r.err == nil || flow.IsTerminal(r.err) {
				t.Fatalf("cancelled call = %v, want retryable", r.err)
			}
			waitFor(t, "the prediction to be cancelled", func() bool { return e.fakes[0].InFlight() == 0 })
			if webhooks {
				if n := e.fakes[0].Cancels(provider.CogPredictionID(job.ID, 1)); n != 1 {
					t.Errorf("cancel requests that found the prediction = %d, want 1", n)
				}
			}
		})
	}
}

// TestCogFailover: one server down or not ready, the other serves; with
// two busy servers, concurrent jobs spread over both slots.
func TestCogFailover(t *testing.T) {
	e := newCogEnv(t, 2, false, cogfake.Config{Slots: 1})
	e.fakes[0].SetHealth(cogfake.StatusSetupFailed)
	p := e.provider(t, func(c *provider.CogConfig) {
		c.URLs = append([]string{"http://127.0.0.1:1"}, c.URLs...) // nothing listens there
	})
	if err := p.(provider.HealthChecker).Health(context.Background()); err != nil {
		t.Fatalf("Health with one READY server: %v", err)
	}
	for i := range 4 {
		r := recv(t, goCall(context.Background(), p, provider.Request{Job: cogJob(fmt.Sprintf("j-f%d", i), `{"output":1}`), Attempt: 1}))
		if r.err != nil {
			t.Fatalf("job %d: %v", i, r.err)
		}
	}
	if e.fakes[0].StartedTotal() != 0 || e.fakes[1].StartedTotal() != 4 {
		t.Fatalf("started = %d, %d; want 0, 4", e.fakes[0].StartedTotal(), e.fakes[1].StartedTotal())
	}

	e.fakes[0].SetHealth(cogfake.StatusReady)
	p = e.provider(t, nil)
	a := goCall(context.Background(), p, provider.Request{Job: cogJob("j-a", `{"duration_ms":200}`), Attempt: 1})
	b := goCall(context.Background(), p, provider.Request{Job: cogJob("j-b", `{"duration_ms":200}`), Attempt: 1})
	waitFor(t, "both servers busy", func() bool { return e.fakes[0].InFlight() == 1 && e.fakes[1].InFlight() == 1 })
	for _, c := range []<-chan callResult{a, b} {
		if r := recv(t, c); r.err != nil {
			t.Fatal(r.err)
		}
	}
}

func TestCogHealth(t *testing.T) {
	e := newCogEnv(t, 1, false, cogfake.Config{})
	p := e.provider(t, nil).(provider.HealthChecker)
	for _, tc := range []struct {
		status string
		ok     bool
	}{{cogfake.StatusReady, true}, {cogfake.StatusStarting, false}, {cogfake.StatusSetupFailed, false}, {cogfake.StatusDefunct, false}} {
		e.fakes[0].SetHealth(tc.status)
		err := p.Health(context.Background())
		if (err == nil) != tc.ok {
			t.Errorf("%s: Health = %v, want ok=%v", tc.status, err, tc.ok)
		}
	}
	// Not ready: a prediction is refused (503) and the call fails retryably.
	e.fakes[0].SetHealth(cogfake.StatusStarting)
	_, err := e.provider(t, nil).Call(context.Background(), provider.Request{Job: cogJob("j-h", `{}`), Attempt: 1})
	if err == nil || flow.IsTerminal(err) {
		t.Fatalf("Call to a starting server = %v, want retryable", err)
	}
}

// TestCogBadAnswers: a server answering garbage gives a clear, classified
// error; nothing is taken for a result.
func TestCogBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		body     string
		terminal bool
		is       error
	}{
		{"html", 200, "<html>gateway</html>", false, provider.ErrInvalidResponse},
		{"unknown status", 200, `{"id":"x","status":"exploded"}`, false, provider.ErrInvalidResponse},
		{"not an object", 200, `[1,2,3]`, false, provider.ErrInvalidResponse},
		{"empty", 202, ``, false, provider.ErrInvalidResponse},
		{"failed", 200, `{"status":"failed","error":"CUDA out of memory"}`, false, provider.ErrRemote},
		{"canceled", 200, `{"status":"canceled"}`, false, provider.ErrRemote},
		{"422", 422, `{"detail":[{"loc":["body","input","prompt"],"msg":"field required","type":"value_error"}]}`, true, nil},
		{"404 not a cog server", 404, `not found`, true, nil},
		{"500", 500, `boom`, false, nil},
		{"too large", 200, `{"status":"succeeded","output":"` + strings.Repeat("x", 2048) + `"}`, true, provider.ErrResponseTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			p, err := provider.NewCog(provider.CogConfig{URLs: []string{srv.URL}, Client: srv.Client(), MaxResponse: 1024})
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Call(context.Background(), provider.Request{Job: cogJob("j-bad", `{}`), Attempt: 1})
			if err == nil {
				t.Fatal("Call succeeded")
			}
			if flow.IsTerminal(err) != tc.terminal {
				t.Errorf("err = %v, terminal = %v, want %v", err, flow.IsTerminal(err), tc.terminal)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want it to wrap %v", err, tc.is)
			}
			var se *provider.StatusError
			if tc.status >= 400 && !errors.As(err, &se) {
				t.Errorf("err = %v, want a *StatusError", err)
			}
		})
	}
}

// TestCogWebhookToken: the token of a Cog webhook URL names one job, one
// prediction number and one key.
func TestCogWebhookToken(t *testing.T) {
	k := []byte("0123456789abcdef")
	tok := provider.CogWebhookToken(k, "j1", 1)
	if len(tok) != 32 || tok != provider.CogWebhookToken(k, "j1", 1) {
		t.Fatalf("token %q is not a stable 32-digit token", tok)
	}
	for _, other := range []string{
		provider.CogWebhookToken(k, "j2", 1), provider.CogWebhookToken(k, "j1", 2),
		provider.CogWebhookToken([]byte("fedcba9876543210"), "j1", 1),
	} {
		if other == tok {
			t.Fatalf("token %q does not depend on job, number and key", tok)
		}
	}
	env := map[string]string{"BEAMLINE_AUTH_SECRET": "an-auth-secret-of-32-bytes......"}
	derived, err := provider.WebhookKey(func(k string) string { return env[k] })
	if err != nil || string(derived) == env["BEAMLINE_AUTH_SECRET"] || len(derived) != 32 {
		t.Fatalf("derived key = %x, %v", derived, err)
	}
	env[provider.EnvWebhookKey] = "a-webhook-key-of-some-length"
	if k, err := provider.WebhookKey(func(k string) string { return env[k] }); err != nil || string(k) != env[provider.EnvWebhookKey] {
		t.Fatalf("explicit key = %q, %v", k, err)
	}
	if _, err := provider.WebhookKey(func(string) string { return "" }); !errors.Is(err, provider.ErrInvalidConfig) {
		t.Fatalf("no secret: %v", err)
	}
}

func TestNewCogConfig(t *testing.T) {
	if _, err := provider.NewCog(provider.CogConfig{URLs: []string{"localhost:5000"}}); !errors.Is(err, provider.ErrInvalidConfig) {
		t.Errorf("URL without scheme: err = %v, want ErrInvalidConfig", err)
	}
	p, err := provider.New("cog", provider.Config{})
	if err != nil || p.Name() != "cog" {
		t.Fatalf("New(cog) = %v, %v", p, err)
	}
}
