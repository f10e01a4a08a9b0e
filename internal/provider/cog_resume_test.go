package provider_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/cogfake"
)

// TestCogResumeInAnotherProcess: a prediction started by one provider
// (process) whose Await is cut short (its processor died) is awaited by
// another provider on the same servers, with a later processor attempt:
// the same prediction id, one prediction started, none cancelled.
func TestCogResumeInAnotherProcess(t *testing.T) {
	e := newCogEnv(t, 1, true, cogfake.Config{Slots: 2})
	// A long Quiet: no re-attach on a timer, which could land between the
	// prediction's end and its completed webhook and start it again (the
	// window cog.go documents); this test is about the resume.
	quiet := func(c *provider.CogConfig) { c.Quiet = time.Minute }
	p1 := e.provider(t, quiet).(provider.Resumable)
	job := cogJob("job-resume", `{"duration_ms":400}`)
	h, err := p1.Start(context.Background(), provider.Request{Job: job, Attempt: 1, Prediction: 1})
	if err != nil {
		t.Fatal(err)
	}
	if h.ID != provider.CogPredictionID(job.ID, 1) || h.Number != 1 || h.Server != e.urls[0] || h.Provider != "cog" {
		t.Fatalf("handle %+v", h)
	}
	b, _ := json.Marshal(h)
	var stored provider.Handle
	if err := json.Unmarshal(b, &stored); err != nil || stored != h {
		t.Fatalf("handle does not survive JSON: %+v %v", stored, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := p1.Await(ctx, h, provider.Request{Job: job, Attempt: 1}); done <- err }()
	waitFor(t, "the prediction to run", func() bool { return e.fakes[0].InFlight() == 1 })
	cancel() // the first process dies
	if err := <-done; err == nil {
		t.Fatal("Await with a cancelled ctx succeeded")
	}
	if n := e.fakes[0].Cancels(h.ID); n != 0 {
		t.Fatalf("Await cancelled the prediction when its ctx ended (%d cancels)", n)
	}

	p2 := e.provider(t, quiet).(provider.Resumable)
	var pct []int
	out, err := p2.Await(context.Background(), stored, provider.Request{Job: job, Attempt: 2, Progress: func(p int) { pct = append(pct, p) }})
	if err != nil {
		t.Fatalf("resumed Await: %v", err)
	}
	if len(out) == 0 {
		t.Fatal("no output")
	}
	if n := e.fakes[0].Started(h.ID); n != 1 || e.fakes[0].StartedTotal() != 1 {
		t.Fatalf("%d predictions started for %s (%d in all), want 1", n, h.ID, e.fakes[0].StartedTotal())
	}
}

// TestCogResumableCancel: Cancel reaches the server holding the prediction,
// whose Await then ends with a remote failure; cancelling it again (it is
// gone) is not an error.
func TestCogResumableCancel(t *testing.T) {
	e := newCogEnv(t, 2, true, cogfake.Config{Slots: 1})
	p := e.provider(t, nil).(provider.Resumable)
	job := cogJob("job-cancel", `{"duration_ms":60000}`)
	h, err := p.Start(context.Background(), provider.Request{Job: job, Attempt: 1, Prediction: 1})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Await(context.Background(), h, provider.Request{Job: job, Attempt: 1})
		done <- err
	}()
	fake := e.fakes[0]
	if h.Server == e.urls[1] {
		fake = e.fakes[1]
	}
	waitFor(t, "the prediction to run", func() bool { return fake.InFlight() == 1 })
	if err := p.Cancel(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if n := fake.Cancels(h.ID); n != 1 {
		t.Fatalf("%d cancels reached the server", n)
	}
	if err := <-done; !errors.Is(err, provider.ErrRemote) {
		t.Fatalf("Await of a cancelled prediction: %v, want ErrRemote", err)
	}
	if err := p.Cancel(context.Background(), h); err != nil {
		t.Fatalf("second Cancel: %v", err)
	}
}

// TestCogPredictionNumberNamesThePrediction: the id follows the prediction
// number, not the processor's attempt.
func TestCogPredictionNumberNamesThePrediction(t *testing.T) {
	e := newCogEnv(t, 1, true, cogfake.Config{Slots: 2})
	p := e.provider(t, nil).(provider.Resumable)
	job := cogJob("job-numbers", `{"duration_ms":1}`)
	h1, err := p.Start(context.Background(), provider.Request{Job: job, Attempt: 3, Prediction: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Await(context.Background(), h1, provider.Request{Job: job, Attempt: 3}); err != nil {
		t.Fatal(err)
	}
	h2, err := p.Start(context.Background(), provider.Request{Job: job, Attempt: 3, Prediction: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Await(context.Background(), h2, provider.Request{Job: job, Attempt: 3}); err != nil {
		t.Fatal(err)
	}
	if h1.ID != provider.CogPredictionID(job.ID, 1) || h2.ID != provider.CogPredictionID(job.ID, 2) || h2.Number != 2 {
		t.Fatalf("ids %s %s, numbers %d %d", h1.ID, h2.ID, h1.Number, h2.Number)
	}
}

// TestCogResumesOnlyWithWebhooks: without a webhook receiver a Cog
// prediction cannot outlive its synchronous PUT, so the provider is not
// offered as a Resumable.
func TestCogResumesOnlyWithWebhooks(t *testing.T) {
	if _, ok := provider.AsResumable(newCogEnv(t, 1, false, cogfake.Config{}).provider(t, nil)); ok {
		t.Error("a cog provider without webhooks is a Resumable")
	}
	if _, ok := provider.AsResumable(newCogEnv(t, 1, true, cogfake.Config{}).provider(t, nil)); !ok {
		t.Error("a cog provider with webhooks is not a Resumable")
	}
	sim, err := provider.NewSim(provider.SimConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := provider.AsResumable(sim); ok {
		t.Error("sim is a Resumable")
	}
}
