package processor

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// finalStored reports whether WEBHOOKS holds a final delivery of job.
func (e *env) finalStored(api, job string) bool {
	st, err := e.js.Stream(context.Background(), streams.Webhooks)
	if err != nil {
		return false
	}
	_, err = st.GetLastMsgForSubject(context.Background(), envelope.WebhookSubject(api, job, true))
	return err == nil
}

// TestCogEndedWhileNoProcessorRan: a processor is killed while its job's
// Cog prediction runs; the prediction ends while no processor is alive,
// and its completed webhook is stored by ingest. The next processor reads
// it (one direct get) and ends the job with it: one prediction, and not
// even a re-attach PUT, which Cog (keeping no history) would have answered
// by running the prediction again. With an in-process webhook receiver the
// webhook reached no one, and the GPU ran twice.
func TestCogEndedWhileNoProcessorRan(t *testing.T) {
	e := newEnv(t)
	rig := newCogRig(t, e)
	p1 := e.startCog(rig)
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	id1 := provider.CogPredictionID(j.ID, 1)
	testutil.WaitFor(t, 10*time.Second, func() bool { return rig.fake.Started(id1) == 1 && e.handleStored(j.ID) },
		func() string { return "prediction 1 not started, or its handle not stored" })
	p1.kill(t)
	rig.finish()
	testutil.WaitFor(t, 10*time.Second, func() bool { return e.finalStored(envelope.WebhookCog, j.ID) },
		func() string { return "the completed webhook was not stored by ingest" })

	p2 := e.startCog(rig)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	if n := rig.fake.StartedTotal(); n != 1 || rig.putsOf(id1) != 1 {
		t.Fatalf("%d predictions started, %d PUTs of %s; want exactly 1 and 1", n, rig.putsOf(id1), id1)
	}
	if string(s.Result) != `{"image":"data:image/png;base64,iVBORw0KGgo="}` {
		t.Fatalf("result %s", s.Result)
	}
	if p2.remote(t, "resume") != 1 || p2.remote(t, "start") != 0 {
		t.Fatal("the redelivery did not resume the stored handle")
	}
	e.checkSeqs(j, envelope.StatusSucceeded)
}

// replicateRig is a fake Replicate API whose webhooks go to a real ingest.
type replicateRig struct {
	fake      *replicatefake.Server
	url       string
	ingestURL string
}

func newReplicateRig(t *testing.T, e *env) *replicateRig {
	t.Helper()
	r := &replicateRig{ingestURL: e.startWebhookIngest(replicatefake.DefaultWebhookSecret)}
	hookClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hookClient.CloseIdleConnections)
	r.fake = replicatefake.New(replicatefake.Config{Client: hookClient})
	srv := httptest.NewServer(r.fake)
	t.Cleanup(srv.Close)
	t.Cleanup(r.fake.Close)
	r.url = srv.URL
	return r
}

// startReplicateHooks starts a processor whose replicate provider asks for
// webhooks; quiet is how long it waits for one before it polls, and polls
// are a minute apart, so a job that ends sooner ended by its webhook.
func (e *env) startReplicateHooks(rig *replicateRig, quiet time.Duration) *running {
	e.t.Helper()
	tr := &http.Transport{}
	e.t.Cleanup(tr.CloseIdleConnections)
	hooks := e.webhooks(rig.ingestURL)
	prov, err := provider.NewReplicate(provider.ReplicateConfig{
		URL: rig.url, Token: replicatefake.DefaultToken, Model: "acme/painter",
		Client: &http.Client{Transport: tr}, Webhooks: hooks, Quiet: quiet,
		PollMin: time.Minute, PollMax: time.Minute,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := withProvider(baseConfig(e.t), prov)
	cfg.Webhooks = hooks
	cfg.JobTimeout = 5 * time.Minute
	return e.start(cfg)
}

func replicateJob(input string) envelope.Job {
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	j.Input = json.RawMessage(input)
	return j
}

// TestReplicateWebhookEndsTheRun: a run waiting on a Replicate prediction
// ends through the signed webhook, stored by ingest and dispatched by the
// processor's one consumer: no poll happens (polls are a minute apart and
// the first one waits an hour of quiet).
func TestReplicateWebhookEndsTheRun(t *testing.T) {
	e := newEnv(t)
	rig := newReplicateRig(t, e)
	r := e.startReplicateHooks(rig, time.Hour)
	j := replicateJob(`{"duration_ms":100,"output":"painted"}`)
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	if string(s.Result) != `"painted"` || rig.fake.Polls() != 0 || rig.fake.CreatedTotal() != 1 {
		t.Fatalf("result %s after %d polls and %d predictions; want the webhook's, 0 and 1", s.Result, rig.fake.Polls(), rig.fake.CreatedTotal())
	}
	if v := counterValue(t, r, "beamline_processor_webhook_deliveries_total", map[string]string{"api": "replicate", "result": "delivered"}); v < 1 {
		t.Fatalf("deliveries dispatched = %v", v)
	}
	e.checkSeqs(j, envelope.StatusSucceeded)
}

// TestReplicateWebhookDroppedFallsBackToPolls: every webhook is lost on
// the way; after the quiet period the run polls and still ends.
func TestReplicateWebhookDroppedFallsBackToPolls(t *testing.T) {
	e := newEnv(t)
	rig := newReplicateRig(t, e)
	rig.fake.SetWebhookFaults(replicatefake.WebhookFaults{Drop: func(string, int) bool { return true }})
	e.startReplicateHooks(rig, 200*time.Millisecond)
	j := replicateJob(`{"duration_ms":50,"output":"polled"}`)
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	if string(s.Result) != `"polled"` || rig.fake.Polls() == 0 || rig.fake.WebhooksSent() != 0 {
		t.Fatalf("result %s, %d polls, %d webhooks sent; want the poll's result", s.Result, rig.fake.Polls(), rig.fake.WebhooksSent())
	}
}

// TestReplicateWebhooksOutOfOrder: deliveries duplicated and sent newest
// first (completed before start and processing): the job ends succeeded
// once, and the older deliveries that follow never move it back.
func TestReplicateWebhooksOutOfOrder(t *testing.T) {
	e := newEnv(t)
	rig := newReplicateRig(t, e)
	rig.fake.SetWebhookFaults(replicatefake.WebhookFaults{Reorder: true, Duplicate: true})
	e.startReplicateHooks(rig, time.Hour)
	j := replicateJob(`{"duration_ms":50,"steps":3,"output":"painted"}`)
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	// Every delivery was answered (stored, duplicate or dropped for the
	// finished job) before the job is checked again.
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return rig.fake.WebhooksSent() > 2 && rig.fake.WebhooksAccepted() == rig.fake.WebhooksSent()
	},
		func() string { return "webhooks not all answered 2xx" })
	if after := e.snapshot(j.ID); after.Status != envelope.StatusSucceeded || after.Seq != s.Seq || string(after.Result) != `"painted"` {
		t.Fatalf("after the late deliveries: %+v, want still %+v", after, s)
	}
	e.checkSeqs(j, envelope.StatusSucceeded)
}

// TestParkedWaitTimesOut: a parked Replicate wait (webhooks, polls an hour
// away) whose prediction never ends is ended by the job timeout: each
// attempt times out, its prediction is cancelled at the provider, the next
// attempt starts a new one, and the job ends dead after MaxDeliver runs.
// The parked wait has no deadline context of its own (inflight.go, park):
// only its timer can end it.
func TestParkedWaitTimesOut(t *testing.T) {
	e := newEnv(t)
	rig := newReplicateRig(t, e)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hooks := e.webhooks(rig.ingestURL)
	prov, err := provider.NewReplicate(provider.ReplicateConfig{
		URL: rig.url, Token: replicatefake.DefaultToken, Model: "acme/painter",
		Client: &http.Client{Transport: tr}, Webhooks: hooks, Quiet: time.Hour,
		PollMin: time.Hour, PollMax: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := withProvider(baseConfig(t), prov)
	cfg.Webhooks = hooks
	cfg.MaxDeliver = 2
	cfg.KindTimeouts = map[string]time.Duration{"image": 400 * time.Millisecond}
	r := e.start(cfg)
	j := replicateJob(`{"duration_ms":600000,"output":"never"}`)
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusDead, 20*time.Second)
	if v := counterValue(t, r, "beamline_processor_job_timeouts_total", nil); v != 2 {
		t.Fatalf("timeouts counted %v, want 2", v)
	}
	if rig.fake.CreatedTotal() != 2 || rig.fake.CancelsTotal() < 2 || rig.fake.Running() != 0 {
		t.Fatalf("%d predictions created, %d cancels, %d running; want 2, ≥ 2, 0",
			rig.fake.CreatedTotal(), rig.fake.CancelsTotal(), rig.fake.Running())
	}
}
