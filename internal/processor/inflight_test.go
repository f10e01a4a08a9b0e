package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// heldReplicate is a Replicate fake whose predictions run until the test
// lets them go, one token each, and which counts how many run at once, in
// all and per user (the job id's prefix, "<user>-...").
type heldReplicate struct {
	fake *replicatefake.Server
	url  string
	all  chan struct{} // closed: every prediction ends
	once sync.Once

	mu      sync.Mutex
	release map[string]chan struct{} // by user: one token, one prediction ends
	running map[string]int           // by user
	total   int
	maxAll  int
	maxUser map[string]int
}

func newHeldReplicate(t *testing.T) *heldReplicate {
	t.Helper()
	h := &heldReplicate{all: make(chan struct{}), release: map[string]chan struct{}{},
		running: map[string]int{}, maxUser: map[string]int{}}
	h.fake = replicatefake.New(replicatefake.Config{
		Predict: func(ctx context.Context, r *replicatefake.Run) (json.RawMessage, error) {
			var job string
			_ = json.Unmarshal(r.Input[replicatefake.InputJob], &job)
			user, _, _ := strings.Cut(job, "-")
			h.mu.Lock()
			h.running[user]++
			h.total++
			h.maxAll = max(h.maxAll, h.total)
			h.maxUser[user] = max(h.maxUser[user], h.running[user])
			go1 := h.releaseOf(user)
			h.mu.Unlock()
			defer func() {
				h.mu.Lock()
				h.running[user]--
				h.total--
				h.mu.Unlock()
			}()
			select {
			case <-go1:
			case <-h.all:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return json.RawMessage(`"done"`), nil
		},
	})
	srv := httptest.NewServer(h.fake)
	t.Cleanup(srv.Close)
	t.Cleanup(h.fake.Close)
	t.Cleanup(h.finish)
	h.url = srv.URL
	return h
}

// finish lets every prediction end.
func (h *heldReplicate) finish() { h.once.Do(func() { close(h.all) }) }

// releaseOf is user's release channel; h.mu held.
func (h *heldReplicate) releaseOf(user string) chan struct{} {
	c := h.release[user]
	if c == nil {
		c = make(chan struct{})
		h.release[user] = c
	}
	return c
}

// end lets one prediction of user end.
func (h *heldReplicate) end(user string) {
	h.mu.Lock()
	c := h.releaseOf(user)
	h.mu.Unlock()
	c <- struct{}{}
}

func (h *heldReplicate) runningNow() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}

func (h *heldReplicate) runningOf(user string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.running[user]
}

// replicateConfig is a processor config serving every kind with a
// replicate provider on url.
func replicateConfig(t *testing.T, url string) Config {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	prov, err := provider.NewReplicate(provider.ReplicateConfig{
		URL: url, Token: replicatefake.DefaultToken, Model: "black-forest-labs/flux-schnell",
		Client: &http.Client{Transport: tr}, PollMin: time.Millisecond, PollMax: 20 * time.Millisecond,
		ExtraInput: func(req provider.Request) map[string]any {
			return map[string]any{replicatefake.InputJob: req.Job.ID}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := withProvider(baseConfig(t), prov)
	cfg.AckWait = time.Second
	cfg.Grace = 50 * time.Millisecond
	return cfg
}

// userJob is a job of user whose id starts with "<user>-".
func userJob(user string, i int) envelope.Job {
	j := newJob(user, "image", envelope.PriorityNormal, nil)
	j.ID = fmt.Sprintf("%s-%d-%s", user, i, j.ID)
	return j
}

// TestWaitsHoldNoWorker: with 2 workers, 20 jobs of a provider whose
// predictions are held all have their prediction started: a job awaiting
// its remote work gives its worker back. (Before, the 2 workers awaited 2
// predictions and the 18 other jobs waited for them.)
func TestWaitsHoldNoWorker(t *testing.T) {
	e := newEnv(t)
	h := newHeldReplicate(t)
	cfg := replicateConfig(t, h.url)
	cfg.Concurrency = 2
	cfg.MaxPerUser = 1
	r := e.start(cfg)
	var jobs []envelope.Job
	for i := range 20 {
		j := userJob(fmt.Sprintf("u%02d", i), i)
		jobs = append(jobs, j)
		e.submit(j)
	}
	testutil.WaitFor(t, 20*time.Second, func() bool { return h.fake.CreatedTotal() == 20 },
		func() string {
			return fmt.Sprintf("%d predictions created with 2 workers, want all 20", h.fake.CreatedTotal())
		})
	if v := counterValue(t, r, "beamline_provider_predictions_inflight", map[string]string{"provider": "replicate", "model": "black-forest-labs/flux-schnell"}); v != 20 {
		t.Fatalf("predictions in flight gauge %v, want 20", v)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return counterValue(t, r, "beamline_processor_detached", nil) == 20 },
		func() string { return "not all 20 runs wait detached" })
	h.finish()
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	e.waitJobsEmpty()
	if v := counterValue(t, r, "beamline_provider_predictions_inflight", map[string]string{"provider": "replicate"}); v != 0 {
		t.Fatalf("predictions in flight gauge %v after the end, want 0", v)
	}
}

// TestParkedWaitsHoldNoGoroutine: 20 jobs awaiting held Replicate
// predictions (polled every 2 s, no webhooks) leave no goroutine in their
// runs, calls or waits between two polls: a parked wait is a struct on a
// timer (docs/design.md#waiting-jobs-hold-no-worker). (Before, each held
// two: the runner in run and the boundary goroutine in Await.) Then all
// of them end.
func TestParkedWaitsHoldNoGoroutine(t *testing.T) {
	e := newEnv(t)
	h := newHeldReplicate(t)
	cfg := replicateConfig(t, h.url)
	prov, err := provider.NewReplicate(provider.ReplicateConfig{
		URL: h.url, Token: replicatefake.DefaultToken, Model: "black-forest-labs/flux-schnell",
		PollMin: 2 * time.Second, PollMax: 2 * time.Second,
		ExtraInput: func(req provider.Request) map[string]any {
			return map[string]any{replicatefake.InputJob: req.Job.ID}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg = withProvider(cfg, prov)
	cfg.Concurrency = 2
	cfg.MaxPerUser = 1
	r := e.start(cfg)
	var jobs []envelope.Job
	for i := range 20 {
		j := userJob(fmt.Sprintf("u%02d", i), i)
		jobs = append(jobs, j)
		e.submit(j)
	}
	testutil.WaitFor(t, 20*time.Second, func() bool { return counterValue(t, r, "beamline_processor_detached", nil) == 20 },
		func() string { return "not all 20 runs wait detached" })
	var held int
	testutil.WaitFor(t, 10*time.Second, func() bool {
		held = waitGoroutines()
		return held == 0
	}, func() string {
		return fmt.Sprintf("%d goroutines in runs, calls or waits while 20 waits are parked, want 0", held)
	})
	h.finish()
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	e.waitJobsEmpty()
}

// waitGoroutines counts the goroutines in a run, a provider call or a
// Replicate wait.
func waitGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "processor.(*Processor).run(") || strings.Contains(g, "processor.(*Processor).call(") ||
			strings.Contains(g, "replicateProvider).Await(") || strings.Contains(g, "replicateWait)") {
			n++
		}
	}
	return n
}

// TestProviderInflightCaps: -provider-inflight 5 holds the predictions at
// the provider to 5 at once, however many workers are free; the jobs past
// it wait and all end. (Without the cap, all 12 would run at once.)
func TestProviderInflightCaps(t *testing.T) {
	e := newEnv(t)
	h := newHeldReplicate(t)
	cfg := replicateConfig(t, h.url)
	cfg.Concurrency = 4
	cfg.MaxPerUser = 20
	cfg.ProviderInflight = 5
	e.start(cfg)
	var jobs []envelope.Job
	for i := range 12 {
		j := userJob("alice", i)
		jobs = append(jobs, j)
		e.submit(j)
	}
	for left := 12; left > 0; left-- {
		want := min(5, left)
		testutil.WaitFor(t, 20*time.Second, func() bool { return h.runningNow() == want },
			func() string { return fmt.Sprintf("%d predictions running, want %d", h.runningNow(), want) })
		h.end("alice")
	}
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	if h.maxAll > 5 {
		t.Fatalf("%d predictions ran at once, want at most 5", h.maxAll)
	}
	if n := h.fake.CreatedTotal(); n != 12 {
		t.Fatalf("%d predictions created, want 12", n)
	}
}

// TestPerUserLimitHoldsWhileWaiting: jobs awaiting their predictions keep
// their user's slot: alice, at -max-per-user 2, never has more than 2
// predictions at once, while bob's job is not held up behind hers.
// (Had the wait released the user's slot with the worker, alice's 6 jobs
// would all run.)
func TestPerUserLimitHoldsWhileWaiting(t *testing.T) {
	e := newEnv(t)
	h := newHeldReplicate(t)
	cfg := replicateConfig(t, h.url)
	cfg.Concurrency = 8
	cfg.MaxPerUser = 2
	r := e.start(cfg)
	var jobs []envelope.Job
	for i := range 6 {
		// One at a time: each finds the ones before it awaiting their
		// predictions, the third and later are parked.
		j := userJob("alice", i)
		jobs = append(jobs, j)
		e.submit(j)
		testutil.WaitFor(t, 20*time.Second, func() bool {
			return h.fake.CreatedTotal() == min(i+1, 2) && counterValue(t, r, "beamline_processor_waiting", nil) == float64(max(0, i-1))
		}, func() string {
			return fmt.Sprintf("after alice's job %d: %d predictions, %v parked", i+1, h.fake.CreatedTotal(), counterValue(t, r, "beamline_processor_waiting", nil))
		})
	}
	bob := userJob("bob", 0)
	jobs = append(jobs, bob)
	e.submit(bob)
	testutil.WaitFor(t, 20*time.Second, func() bool { return h.runningOf("bob") == 1 && h.runningOf("alice") == 2 },
		func() string {
			return fmt.Sprintf("alice %d and bob %d predictions running, want 2 and 1", h.runningOf("alice"), h.runningOf("bob"))
		})
	for left := 6; left > 0; left-- {
		want := min(2, left)
		testutil.WaitFor(t, 20*time.Second, func() bool { return h.runningOf("alice") == want },
			func() string {
				return fmt.Sprintf("alice has %d predictions running, want %d", h.runningOf("alice"), want)
			})
		h.end("alice")
	}
	h.finish()
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.maxUser["alice"] > 2 {
		t.Fatalf("alice had %d predictions at once, want at most 2", h.maxUser["alice"])
	}
}

// TestShutdownHandsBackDetachedWaits: a processor with 2 workers and 6
// jobs awaiting their predictions hands every one back when its grace
// runs out (retrying at attempt 0, the prediction left running), and the
// next processor resumes the 6 predictions instead of creating new ones.
// (A drain that waited for its workers only would return with the 6 runs
// still awaiting, their jobs never handed back.)
func TestShutdownHandsBackDetachedWaits(t *testing.T) {
	e := newEnv(t)
	h := newHeldReplicate(t)
	cfg := replicateConfig(t, h.url)
	cfg.Concurrency = 2
	cfg.MaxPerUser = 1
	r := e.start(cfg)
	var jobs []envelope.Job
	for i := range 6 {
		j := userJob(fmt.Sprintf("s%d", i), i)
		jobs = append(jobs, j)
		e.submit(j)
	}
	testutil.WaitFor(t, 20*time.Second, func() bool {
		return h.fake.CreatedTotal() == 6 && counterValue(t, r, "beamline_processor_detached", nil) == 6
	}, func() string {
		return fmt.Sprintf("%d predictions created, want 6 awaited detached", h.fake.CreatedTotal())
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if s := e.snapshot(j.ID); s.Status != envelope.StatusRetrying || s.Attempt != 0 {
			t.Fatalf("job %s after the shutdown: %+v, want retrying at attempt 0 (handed back)", j.ID, s)
		}
	}
	if n := h.fake.CancelsTotal(); n != 0 {
		t.Fatalf("the shutdown cancelled %d predictions, want none", n)
	}
	e.start(cfg)
	h.finish()
	for _, j := range jobs {
		e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	}
	if n := h.fake.CreatedTotal(); n != 6 {
		t.Fatalf("%d predictions created, want 6: the next processor resumes them", n)
	}
}
