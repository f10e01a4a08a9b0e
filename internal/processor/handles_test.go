package processor

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/cogfake"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// cogRig is a fake Cog server whose predictions wait for the test, and a
// real ingest that receives its webhooks and stores them in WEBHOOKS, where
// every processor reads them: a webhook outlives the processor that asked
// for it.
type cogRig struct {
	fake      *cogfake.Server
	url       string
	ingestURL string

	mu      sync.Mutex
	started int           // predictions started, in order
	fail    map[int]bool  // the started-th prediction fails
	release chan struct{} // closed: predictions end
	once    sync.Once
	puts    sync.Map // prediction id → *atomic.Int64: PUTs received
}

// putsOf is how many PUTs of prediction id the server received (creates and
// re-attaches alike).
func (r *cogRig) putsOf(id string) int64 {
	if v, ok := r.puts.Load(id); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// testWebhookKey keys the Cog webhook tokens of ingest and processors.
var testWebhookKey = []byte("test-webhook-key-0123")

// startWebhookIngest runs an ingest that takes webhooks (Cog tokens keyed with
// testWebhookKey, Replicate signatures with replicateSecret when set) and
// returns its base URL.
func (e *env) startWebhookIngest(replicateSecret string) string {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	svc, err := ingest.New(ingest.Config{
		Listener: ln, Kinds: []string{"image", "video"}, Secret: []byte("test-auth-secret-0123456789"),
		Grace: time.Second, WebhookKey: testWebhookKey, ReplicateWebhookSecret: replicateSecret,
	}, e.nc, e.js, testLogger(e.t), prometheus.NewRegistry())
	if err != nil {
		_ = ln.Close()
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("ingest: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// webhooks is one processor's webhook source, pointing at ingest.
func (e *env) webhooks(ingestURL string) *Webhooks {
	e.t.Helper()
	w, err := NewWebhooks(ingestURL, testWebhookKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

func newCogRig(t *testing.T, e *env) *cogRig {
	t.Helper()
	r := &cogRig{fail: map[int]bool{}, release: make(chan struct{})}
	r.ingestURL = e.startWebhookIngest("")
	hookClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hookClient.CloseIdleConnections)
	r.fake = cogfake.New(cogfake.Config{
		Slots:  4,
		Client: hookClient,
		Predict: func(ctx context.Context, run *cogfake.Run) (json.RawMessage, error) {
			r.mu.Lock()
			r.started++
			n := r.started
			r.mu.Unlock()
			select {
			case <-r.release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			r.mu.Lock()
			fail := r.fail[n]
			r.mu.Unlock()
			if fail {
				return nil, &cogfake.FailedError{Msg: "CUDA out of memory"}
			}
			return json.RawMessage(`{"image":"data:image/png;base64,iVBORw0KGgo="}`), nil
		},
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if id, ok := strings.CutPrefix(req.URL.Path, "/predictions/"); ok && req.Method == http.MethodPut {
			v, _ := r.puts.LoadOrStore(id, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		r.fake.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(r.fake.Close)
	t.Cleanup(r.finish)
	r.url = srv.URL
	return r
}

// finish lets every prediction, running or to come, end.
func (r *cogRig) finish() { r.once.Do(func() { close(r.release) }) }

// cutTransport is one process's network: kill cuts it, so a killed
// processor can no more reach Cog (to cancel, say) than a SIGKILLed one.
type cutTransport struct {
	cut  atomic.Bool
	base *http.Transport
}

func (c *cutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		return nil, errors.New("the process is dead")
	}
	return c.base.RoundTrip(r)
}

// cogProc is a processor serving every kind with its own cog provider.
type cogProc struct {
	r  *running
	tr *cutTransport
}

func (e *env) startCog(rig *cogRig, wrap ...func(provider.Resumable) provider.Provider) *cogProc {
	e.t.Helper()
	tr := &cutTransport{base: &http.Transport{}}
	e.t.Cleanup(tr.base.CloseIdleConnections)
	hooks := e.webhooks(rig.ingestURL)
	prov, err := provider.NewCog(provider.CogConfig{
		URLs: []string{rig.url}, Client: &http.Client{Transport: tr}, Webhooks: hooks,
		BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond,
		// No re-attach on a timer: it could land between a prediction's
		// end and its completed webhook, and start it again (cog.go).
		Quiet: time.Minute,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var served provider.Provider = prov
	for _, w := range wrap {
		r, ok := provider.AsResumable(prov)
		if !ok {
			e.t.Fatal("the cog provider with webhooks is not resumable")
		}
		served = w(r)
	}
	cfg := withProvider(baseConfig(e.t), served)
	cfg.Webhooks = hooks
	cfg.AckWait = time.Second
	cfg.Grace = 50 * time.Millisecond
	return &cogProc{r: e.start(cfg), tr: tr}
}

// kill stops the processor the way SIGKILL would: no network, no NATS, no
// goodbye (the shutdown that follows can neither write nor cancel).
func (c *cogProc) kill(t *testing.T) {
	t.Helper()
	c.tr.cut.Store(true)
	c.r.p.nc.Close()
	_ = c.r.stop(t)
}

// handleStored reports whether the job's remote handle is in job_handles.
func (e *env) handleStored(id string) bool {
	kv, err := e.js.KeyValue(context.Background(), "job_handles")
	if err != nil {
		return false
	}
	_, err = kv.Get(context.Background(), id)
	return err == nil
}

func (c *cogProc) remote(t *testing.T, action string) float64 {
	return counterValue(t, c.r, "beamline_processor_remote_total", map[string]string{"action": action})
}

// TestCrashResumesThePrediction: a processor killed while its job's Cog
// prediction runs; the job's redelivery, on another processor, resumes the
// same prediction instead of starting one: exactly one prediction for the
// job, which succeeds. (Before job_handles the redelivery, a new attempt,
// PUT a new prediction id: two predictions, the GPU paid twice.)
func TestCrashResumesThePrediction(t *testing.T) {
	e := newEnv(t)
	rig := newCogRig(t, e)
	p1 := e.startCog(rig)
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	id1 := provider.CogPredictionID(j.ID, 1)
	testutil.WaitFor(t, 10*time.Second, func() bool { return rig.fake.Started(id1) == 1 && e.handleStored(j.ID) },
		func() string { return "prediction 1 not started, or its handle not stored" })
	p1.kill(t)
	if s := e.snapshot(j.ID); s.Status != envelope.StatusRunning || s.Attempt != 1 {
		t.Fatalf("after the kill: %+v, want running attempt 1", s)
	}

	p2 := e.startCog(rig)
	// Resumed (it waits for the prediction's webhooks), or, without
	// handles, a new prediction started.
	testutil.WaitFor(t, 20*time.Second, func() bool { return p2.remote(t, "resume") == 1 || rig.fake.StartedTotal() > 1 },
		func() string { return "the redelivery neither resumed nor started a prediction" })
	rig.finish()
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	if n := rig.fake.StartedTotal(); n != 1 || rig.fake.Started(id1) != 1 {
		t.Fatalf("%d predictions started for the job (%d as %s), want exactly 1", n, rig.fake.Started(id1), id1)
	}
	if s.Attempt != 2 || string(s.Result) != `{"image":"data:image/png;base64,iVBORw0KGgo="}` {
		t.Fatalf("snapshot %+v, want attempt 2 (the crashed run counts) and the prediction's output", s)
	}
	if p2.remote(t, "start") != 0 || p2.remote(t, "resume") != 1 {
		t.Fatal("the redelivery started new remote work, or did not resume")
	}
	e.checkSeqs(j, envelope.StatusSucceeded)
}

// TestFailedPredictionIsReplaced: a prediction resumed after a crash that
// then fails is replaced by prediction number 2 on the retry (attempt 3);
// the crash did not use up a prediction number. (Before job_handles the
// redelivery started prediction 2 at once, and the failure was never seen.)
func TestFailedPredictionIsReplaced(t *testing.T) {
	e := newEnv(t)
	rig := newCogRig(t, e)
	rig.fail[1] = true
	p1 := e.startCog(rig)
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	id1, id2 := provider.CogPredictionID(j.ID, 1), provider.CogPredictionID(j.ID, 2)
	testutil.WaitFor(t, 10*time.Second, func() bool { return rig.fake.Started(id1) == 1 && e.handleStored(j.ID) },
		func() string { return "prediction 1 not started, or its handle not stored" })
	p1.kill(t)

	p2 := e.startCog(rig)
	// Resumed (it waits for the prediction's webhooks), or, without
	// handles, a new prediction started.
	testutil.WaitFor(t, 20*time.Second, func() bool { return p2.remote(t, "resume") == 1 || rig.fake.StartedTotal() > 1 },
		func() string { return "the redelivery neither resumed nor started a prediction" })
	rig.finish()
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	if rig.fake.StartedTotal() != 2 || rig.fake.Started(id1) != 1 || rig.fake.Started(id2) != 1 {
		t.Fatalf("predictions started: %d in all, %d as number 1, %d as number 2; want 1 and 1",
			rig.fake.StartedTotal(), rig.fake.Started(id1), rig.fake.Started(id2))
	}
	if s.Attempt != 3 {
		t.Fatalf("snapshot %+v, want attempt 3: crashed, resumed and failed, replaced", s)
	}
	if p2.remote(t, "resume") != 1 || p2.remote(t, "start") != 1 {
		t.Fatalf("second processor: %v resumes, %v starts; want 1 and 1", p2.remote(t, "resume"), p2.remote(t, "start"))
	}
	evs := e.checkSeqs(j, envelope.StatusSucceeded)
	sawRetry := false
	for _, ev := range evs {
		sawRetry = sawRetry || (ev.Status == envelope.StatusRetrying && ev.Attempt == 2)
	}
	if !sawRetry {
		t.Fatalf("events %+v, want the failed prediction's retrying at attempt 2", evs)
	}
}

// cancelAsIngest does what DELETE /v1/jobs/{id} does: cancelled stored,
// then the cancel notice.
func (e *env) cancelAsIngest(j envelope.Job) {
	e.t.Helper()
	if _, err := e.apply(context.Background(), j.ID, envelope.TypeCancelled, func(s *envelope.Snapshot) error {
		s.Status = envelope.StatusCancelled
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.nc.Publish(envelope.CancelSubject(j.User, j.ID), nil); err != nil {
		e.t.Fatal(err)
	}
}

// TestCancelReachesThePrediction: a DELETE cancels the job's Cog
// prediction, whether a processor awaits it (the cancel notice) or its
// processor was killed (the next delivery finds the job cancelled and
// cancels the stored handle before letting go of the message). The second
// case failed before job_handles: nobody cancelled, the GPU ran on.
func TestCancelReachesThePrediction(t *testing.T) {
	for _, crashed := range []bool{false, true} {
		name := "awaited"
		if crashed {
			name = "crashed"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			rig := newCogRig(t, e)
			p1 := e.startCog(rig)
			j := newJob("alice", "image", envelope.PriorityNormal, nil)
			e.submit(j)
			id1 := provider.CogPredictionID(j.ID, 1)
			testutil.WaitFor(t, 10*time.Second, func() bool { return rig.fake.Started(id1) == 1 && e.handleStored(j.ID) },
				func() string { return "prediction 1 not started, or its handle not stored" })
			if crashed {
				p1.kill(t)
				e.cancelAsIngest(j)
				e.startCog(rig)
			} else {
				e.cancelAsIngest(j)
			}
			testutil.WaitFor(t, 20*time.Second, func() bool { return rig.fake.Cancels(id1) == 1 && rig.fake.InFlight() == 0 },
				func() string { return "the prediction was not cancelled" })
			e.waitStatus(j.ID, envelope.StatusCancelled, 10*time.Second)
			e.waitJobsEmpty()
			if n := rig.fake.StartedTotal(); n != 1 {
				t.Fatalf("%d predictions started, want 1", n)
			}
		})
	}
}

// handedBack runs a job's Cog prediction on a processor whose shutdown
// grace then runs out, and checks the job was handed back (retrying at
// attempt 0, its handle stored, its prediction 1 id1 started).
func handedBack(t *testing.T) (e *env, rig *cogRig, j envelope.Job, id1 string) {
	t.Helper()
	e = newEnv(t)
	rig = newCogRig(t, e)
	p1 := e.startCog(rig)
	j = newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	id1 = provider.CogPredictionID(j.ID, 1)
	testutil.WaitFor(t, 10*time.Second, func() bool { return rig.fake.Started(id1) == 1 && e.handleStored(j.ID) },
		func() string { return "prediction 1 not started, or its handle not stored" })
	if err := p1.r.stop(t); err != nil {
		t.Fatal(err)
	}
	if s := e.snapshot(j.ID); s.Status != envelope.StatusRetrying || s.Attempt != 0 {
		t.Fatalf("after the shutdown: %+v, want retrying attempt 0 (handed back)", s)
	}
	return e, rig, j, id1
}

// TestShutdownLeavesThePredictionRunning: a processor whose shutdown grace
// runs out while its job's prediction runs hands the job back without
// cancelling the prediction, and the next run resumes it: one prediction,
// no cancel. (Before, the end of the grace cancelled the prediction and
// the next attempt started a new one.)
func TestShutdownLeavesThePredictionRunning(t *testing.T) {
	e, rig, j, id1 := handedBack(t)
	if n := rig.fake.Cancels(id1); n != 0 || rig.fake.InFlight() != 1 {
		t.Fatalf("the shutdown cancelled the prediction (%d cancels, %d in flight)", n, rig.fake.InFlight())
	}
	p2 := e.startCog(rig)
	testutil.WaitFor(t, 20*time.Second, func() bool { return p2.remote(t, "resume") == 1 || rig.fake.StartedTotal() > 1 },
		func() string { return "the next run neither resumed nor started a prediction" })
	rig.finish()
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	if n := rig.fake.StartedTotal(); n != 1 || s.Attempt != 1 {
		t.Fatalf("%d predictions started, attempt %d; want 1 and 1", n, s.Attempt)
	}
	e.checkSeqs(j, envelope.StatusSucceeded)
}

// TestCancelAfterHandBackReachesThePrediction: a job handed back at the end
// of a shutdown's grace is stored `retrying` at attempt 0 with its
// prediction left running for the next run; a DELETE then must still reach
// that prediction when the next delivery finds the job cancelled. (It did
// not: the stored handle was skipped for attempt-0 snapshots.)
func TestCancelAfterHandBackReachesThePrediction(t *testing.T) {
	e, rig, j, id1 := handedBack(t)
	e.cancelAsIngest(j)
	e.startCog(rig)
	testutil.WaitFor(t, 20*time.Second, func() bool { return rig.fake.Cancels(id1) == 1 && rig.fake.InFlight() == 0 },
		func() string { return "the handed-back prediction was not cancelled" })
	e.waitJobsEmpty()
}

// startGate is a resumable provider whose Start waits for the test and then
// creates the work whatever its ctx says: a create that was in flight when
// the job was cancelled.
type startGate struct {
	provider.Resumable
	entered chan struct{}
	open    chan struct{}
}

func (g *startGate) Start(ctx context.Context, req provider.Request) (provider.Handle, error) {
	close(g.entered)
	<-g.open
	return g.Resumable.Start(context.WithoutCancel(ctx), req)
}

// TestCancelDuringStartReachesThePrediction: a DELETE while the provider's
// Start is under way ends the run at once (its boundary does not wait for
// the call), so the handle Start returns afterwards must still be settled:
// the work is cancelled, not left running unwatched. (It was left running:
// the run had settled before the handle existed.)
func TestCancelDuringStartReachesThePrediction(t *testing.T) {
	e := newEnv(t)
	rig := newCogRig(t, e)
	g := &startGate{entered: make(chan struct{}), open: make(chan struct{})}
	e.startCog(rig, func(r provider.Resumable) provider.Provider { g.Resumable = r; return g })
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Start was not called")
	}
	e.cancelAsIngest(j)
	e.waitJobsEmpty()
	close(g.open)
	id1 := provider.CogPredictionID(j.ID, 1)
	testutil.WaitFor(t, 20*time.Second, func() bool { return rig.fake.Cancels(id1) == 1 && rig.fake.InFlight() == 0 },
		func() string { return "the prediction started after the cancel was left running" })
}
