package provider_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/pkg/flow"
)

// streamModel reports three partial outputs ["p1"], ["p1","p2"], ... 20ms
// apart, then fails with input "fail" or returns ["final"].
var streamModel = partsModel(3, 20*time.Millisecond)

// partsModel is a model that reports n partial outputs ["p1"],
// ["p1","p2"], ... gap apart, then fails with input "fail" or returns
// ["final"].
func partsModel(n int, gap time.Duration) func(context.Context, *replicatefake.Run) (json.RawMessage, error) {
	return func(ctx context.Context, r *replicatefake.Run) (json.RawMessage, error) {
		var parts []string
		for i := 1; i <= n; i++ {
			if err := flow.Sleep(ctx, gap); err != nil {
				return nil, err
			}
			parts = append(parts, fmt.Sprintf("p%d", i))
			b, _ := json.Marshal(parts)
			r.Output(b)
		}
		var fail string
		_ = json.Unmarshal(r.Input["fail"], &fail)
		if fail != "" {
			return nil, errors.New(fail)
		}
		return json.RawMessage(`["final"]`), nil
	}
}

func newStreamEnv(t *testing.T) *replicateEnv {
	return newReplicateEnv(t, replicatefake.Config{
		Predict:  streamModel,
		Validate: func(map[string]json.RawMessage) error { return nil },
	})
}

// slowPolls makes a wait without a working stream take at least 10s.
func slowPolls(c *provider.ReplicateConfig) {
	c.Stream = true
	c.PollMin, c.PollMax = 10*time.Second, 10*time.Second
}

func fastPolls(c *provider.ReplicateConfig) {
	c.Stream = true
	c.PollMin, c.PollMax = 5*time.Millisecond, 20*time.Millisecond
}

type previews struct {
	mu  sync.Mutex
	got []string
}

func (p *previews) add(v json.RawMessage) {
	p.mu.Lock()
	p.got = append(p.got, string(v))
	p.mu.Unlock()
}

func (p *previews) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}

func streamCall(t *testing.T, p provider.Provider, job, input string) (json.RawMessage, error, []string, time.Duration) {
	t.Helper()
	var pv previews
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	out, err := p.Call(ctx, provider.Request{Job: cogJob(job, input), Attempt: 1, Preview: pv.add})
	return out, err, pv.list(), time.Since(t0)
}

// TestReplicateStreamDone: with Stream the prediction is created with
// "stream": true; its output events are previews, and done fetches the
// prediction at once (one GET, long before the first poll would be due):
// the result is the prediction's output.
func TestReplicateStreamDone(t *testing.T) {
	e := newStreamEnv(t)
	p := e.provider(t, slowPolls)
	out, err, pv, took := streamCall(t, p, "job-s1", `{}`)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	ids := e.fake.IDs()
	var pred struct {
		Output json.RawMessage   `json:"output"`
		URLs   map[string]string `json:"urls"`
	}
	if err := json.Unmarshal(e.fake.Snapshot(ids[0]), &pred); err != nil || pred.URLs["stream"] == "" {
		t.Fatalf("prediction %s: no urls.stream (%v): not created with stream: true", e.fake.Snapshot(ids[0]), err)
	}
	if string(out) != string(pred.Output) || string(out) != `["final"]` {
		t.Fatalf("result = %s, want the prediction's output %s", out, pred.Output)
	}
	if took > 5*time.Second {
		t.Fatalf("took %v: done did not fetch the prediction at once", took)
	}
	if n := e.fake.Polls(); n != 1 {
		t.Errorf("GETs = %d, want 1 (at done)", n)
	}
	// Previews not reported yet coalesce (the newest counts), so which
	// partials show depends on timing; each must be one of the stream's.
	streamed := map[string]bool{`["p1"]`: true, `["p1","p2"]`: true, `["p1","p2","p3"]`: true, `["final"]`: true}
	if len(pv) == 0 || pv[0] == `["final"]` {
		t.Errorf("previews = %q, want the stream's partial outputs first", pv)
	}
	for _, v := range pv {
		if !streamed[v] {
			t.Errorf("preview %s was not streamed", v)
		}
	}
	if n := e.fake.Streams(); n != 1 {
		t.Errorf("streams read = %d, want 1", n)
	}
}

// TestReplicateStreamCut: a stream cut mid-way does not fail the job: the
// wait goes on by polls and the result is the prediction's output.
func TestReplicateStreamCut(t *testing.T) {
	e := newStreamEnv(t)
	e.fake.CutStreams(1)
	p := e.provider(t, fastPolls)
	out, err, _, _ := streamCall(t, p, "job-s2", `{}`)
	if err != nil || string(out) != `["final"]` {
		t.Fatalf("Call = %s, %v; want the output by polls", out, err)
	}
	if n := e.fake.Streams(); n != 1 {
		t.Fatalf("streams read = %d, want 1", n)
	}
	if e.fake.Polls() < 2 {
		t.Errorf("GETs = %d: the wait did not go on polling", e.fake.Polls())
	}
}

// TestReplicateStreamRefused: a stream answered 401 or 500 does not fail
// the job.
func TestReplicateStreamRefused(t *testing.T) {
	for _, code := range []int{401, 500} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			e := newStreamEnv(t)
			e.fake.Inject(replicatefake.Fault{Route: replicatefake.RouteStream, Status: code})
			p := e.provider(t, fastPolls)
			out, err, _, _ := streamCall(t, p, "job-s3", `{}`)
			if err != nil || string(out) != `["final"]` {
				t.Fatalf("Call = %s, %v; want the output by polls", out, err)
			}
			if n := e.fake.Streams(); n != 0 {
				t.Errorf("streams answered 200 = %d, want 0 (the fault answered)", n)
			}
		})
	}
}

// TestReplicateStreamErrorEvent: an error event fetches the prediction at
// once, and the outcome is the one without a stream: the failed
// prediction's retryable ErrRemote with the model's message.
func TestReplicateStreamErrorEvent(t *testing.T) {
	e := newStreamEnv(t)
	_, plainErr, _, _ := streamCall(t, e.provider(t, func(c *provider.ReplicateConfig) {
		c.PollMin, c.PollMax = 5*time.Millisecond, 20*time.Millisecond
	}), "job-s4", `{"fail":"CUDA out of memory"}`)
	_, err, _, took := streamCall(t, e.provider(t, slowPolls), "job-s5", `{"fail":"CUDA out of memory"}`)
	if err == nil || plainErr == nil {
		t.Fatalf("errors = %v, %v; want both failed", err, plainErr)
	}
	ids := e.fake.IDs()
	if got, want := strings.ReplaceAll(err.Error(), ids[1], "ID"), strings.ReplaceAll(plainErr.Error(), ids[0], "ID"); got != want {
		t.Errorf("error with a stream %q, want as without %q", got, want)
	}
	if flow.IsTerminal(err) || !errors.Is(err, provider.ErrRemote) || !strings.Contains(err.Error(), "CUDA out of memory") {
		t.Errorf("err = %v, want retryable ErrRemote with the model's error", err)
	}
	if took > 5*time.Second {
		t.Errorf("took %v: the error event did not fetch the prediction at once", took)
	}
}

// TestReplicateStreamResumed: a wait resumed by another provider (another
// process, after a crash) has no create answer to take urls.stream from:
// it opens the stream named by the first prediction it polls, so previews
// and the prompt end at done come back after a restart too.
func TestReplicateStreamResumed(t *testing.T) {
	// Ten partial outputs 40ms apart: the first poll (after PollMin) sees
	// the prediction running, long before it ends.
	e := newReplicateEnv(t, replicatefake.Config{
		Validate: func(map[string]json.RawMessage) error { return nil },
		Predict:  partsModel(10, 40*time.Millisecond),
	})
	streamed := func(c *provider.ReplicateConfig) {
		c.Stream = true
		c.PollMin, c.PollMax = 50*time.Millisecond, 10*time.Second // after the first poll, only done ends the wait soon
	}
	a := e.provider(t, streamed).(provider.Resumable)
	req := provider.Request{Job: cogJob("job-sr", `{}`), Attempt: 1}
	h, err := a.Start(context.Background(), req)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	// a crashes here: it never awaits. b resumes the handle.
	var pv previews
	req.Preview = pv.add
	b := e.provider(t, streamed).(provider.Resumable)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	out, err := b.Await(ctx, h, req)
	if err != nil || string(out) != `["final"]` {
		t.Fatalf("Await = %s, %v", out, err)
	}
	if n := e.fake.Streams(); n != 1 {
		t.Fatalf("streams read = %d, want 1: the resumed wait did not open the prediction's stream", n)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Fatalf("took %v: the stream's done did not end the wait before the next poll", took)
	}
	if got := pv.list(); len(got) < 2 {
		t.Errorf("previews = %q, want the stream's partial outputs", got)
	}
}
