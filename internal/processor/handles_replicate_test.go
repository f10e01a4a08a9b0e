package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// startReplicate runs a processor whose replicate provider talks to url
// over its own cuttable network.
func (e *env) startReplicate(url string) *cogProc {
	e.t.Helper()
	tr := &cutTransport{base: &http.Transport{}}
	e.t.Cleanup(tr.base.CloseIdleConnections)
	prov, err := provider.NewReplicate(provider.ReplicateConfig{
		URL: url, Token: replicatefake.DefaultToken, Model: "black-forest-labs/flux-schnell",
		Client: &http.Client{Transport: tr}, PollMin: time.Millisecond, PollMax: 20 * time.Millisecond,
		ExtraInput: func(req provider.Request) map[string]any {
			return map[string]any{replicatefake.InputJob: req.Job.ID}
		},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := withProvider(baseConfig(e.t), prov)
	cfg.AckWait = time.Second
	cfg.Grace = 50 * time.Millisecond
	return &cogProc{r: e.start(cfg), tr: tr}
}

// TestCrashResumesTheReplicatePrediction: Replicate's create is not
// idempotent, so only the stored handle keeps a redelivery from creating a
// second prediction: the processor killed while it polls, the next run
// polls the same prediction id, one prediction created. (Before
// job_handles the id lived only in the killed process: 2 created.)
func TestCrashResumesTheReplicatePrediction(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	fake := replicatefake.New(replicatefake.Config{
		Predict: func(ctx context.Context, r *replicatefake.Run) (json.RawMessage, error) {
			select {
			case <-release:
				return json.RawMessage(`"done"`), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	var once bool
	finish := func() {
		if !once {
			once = true
			close(release)
		}
	}
	t.Cleanup(finish)

	p1 := e.startReplicate(srv.URL)
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	testutil.WaitFor(t, 10*time.Second, func() bool { return fake.Created(j.ID) == 1 && e.handleStored(j.ID) },
		func() string { return "prediction not created, or its handle not stored" })
	p1.kill(t)
	p2 := e.startReplicate(srv.URL)
	testutil.WaitFor(t, 20*time.Second, func() bool { return p2.remote(t, "resume") == 1 || fake.CreatedTotal() > 1 },
		func() string { return "the redelivery neither resumed nor created a prediction" })
	finish()
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	if n := fake.CreatedTotal(); n != 1 {
		t.Fatalf("%d predictions created for the job, want 1", n)
	}
	if s.Attempt != 2 || string(s.Result) != `"done"` {
		t.Fatalf("snapshot %+v, want attempt 2 and the prediction's output", s)
	}
	if n := fake.CancelsTotal(); n != 0 {
		t.Fatalf("%d cancels, want none", n)
	}
}

// TestGoneOutputsStartANewPrediction: Replicate serves an output file for a
// while only (the fake: once). A run that read it and crashed before it
// stored the copy leaves the next run a 404 for the same prediction's
// output. That is not the job's failure: the prediction is marked ended,
// the run is retried, and a second prediction makes fresh outputs, which
// are kept. (Before: the job ended failed, "output not available".)
func TestGoneOutputsStartANewPrediction(t *testing.T) {
	e := newEnv(t)
	var predictions atomic.Int32
	fake := replicatefake.New(replicatefake.Config{
		Predict: func(ctx context.Context, r *replicatefake.Run) (json.RawMessage, error) {
			url := r.File("out.png", "image/png", []byte("\x89PNG fresh "+r.ID))
			if predictions.Add(1) == 1 {
				// As if a crashed run had downloaded it already.
				url += ".gone"
			}
			return json.Marshal(url)
		},
	})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	prov, err := provider.NewReplicate(provider.ReplicateConfig{
		URL: srv.URL, Token: replicatefake.DefaultToken, Model: "black-forest-labs/flux-schnell",
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond,
		ExtraInput: func(req provider.Request) map[string]any {
			return map[string]any{replicatefake.InputJob: req.Job.ID}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, st := outputsConfig(t, e)
	f, err := outputs.NewFetcher(outputs.FetchConfig{AllowPrivate: true}) // the fake is on 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	cfg.Outputs = &outputs.Keeper{Store: st, Fetcher: f}
	cfg.Providers = map[string]provider.Provider{prov.Name(): prov}
	cfg.DefaultProvider = prov.Name()
	e.start(cfg)
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	var s envelope.Snapshot
	testutil.WaitFor(t, 20*time.Second, func() bool { s = e.snapshot(j.ID); return s.Status.Terminal() },
		func() string { return fmt.Sprintf("job still %s", s.Status) })
	if s.Status != envelope.StatusSucceeded {
		t.Fatalf("job ended %s (%s), want succeeded after a new prediction", s.Status, s.Error)
	}
	if n := fake.Created(j.ID); n != 2 {
		t.Fatalf("%d predictions created, want 2 (the first one's output was gone)", n)
	}
	var out struct {
		Output string `json:"output"`
	}
	if err := json.Unmarshal(s.Result, &out); err != nil || out.Output == "" {
		t.Fatalf("result names no kept output: %s", s.Result)
	}
	if _, err := st.Stat(context.Background(), outputs.Key(j.ID, out.Output)); err != nil {
		t.Fatalf("kept output: %v", err)
	}
}
