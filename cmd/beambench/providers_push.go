package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/pkg/envelope"
)

// The providers scenario's third figure (issue 13 §7): a webhook received
// → the browser's push. A Replicate fake holds N predictions that an
// in-process processor awaits on webhooks only (no polls: a 10-minute
// quiet period); a WebSocket client has joined user:<u>. One prediction
// at a time is released: the fake posts its "completed" webhook to
// devstack's ingest, which verifies and stores it; the processor's
// webhook consumer hands it to the waiting run, which writes the outcome;
// the notifier pushes it. The figure is from the moment the webhook's
// request leaves the fake to the moment the client reads the push. The
// same-run baseline is the floor of any push: a core NATS publish read by
// a subscriber on the same server, one at a time.

const providersPushKind = "pushbench"

// sentClock records when each job's completed webhook was sent.
type sentClock struct {
	base http.RoundTripper
	mu   sync.Mutex
	sent map[string]time.Time
}

func (c *sentClock) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.URL.Path == "/v1/webhooks/replicate" {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		_ = r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(b))
		var pred struct {
			Status string                     `json:"status"`
			Input  map[string]json.RawMessage `json:"input"`
		}
		if json.Unmarshal(b, &pred) == nil && pred.Status == "succeeded" {
			var job string
			_ = json.Unmarshal(pred.Input[replicatefake.InputJob], &job)
			c.mu.Lock()
			c.sent[job] = time.Now()
			c.mu.Unlock()
		}
	}
	return c.base.RoundTrip(r)
}

func (c *sentClock) at(job string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.sent[job]
	return t, ok
}

func providersWebhookPush(ctx context.Context, t *target, o *options, rep *reporter) error {
	n := o.provPushJobs
	if n <= 0 {
		return nil
	}
	// The fake: each prediction waits for its own release.
	var relMu sync.Mutex
	releases := map[string]chan struct{}{}
	releaseOf := func(job string) chan struct{} {
		relMu.Lock()
		defer relMu.Unlock()
		c, ok := releases[job]
		if !ok {
			c = make(chan struct{})
			releases[job] = c
		}
		return c
	}
	clock := &sentClock{base: &http.Transport{}, sent: map[string]time.Time{}}
	fake := replicatefake.New(replicatefake.Config{
		StartDelay:    func(map[string]json.RawMessage) time.Duration { return 0 },
		WebhookSecret: replicatefake.DefaultWebhookSecret,
		Client:        &http.Client{Transport: clock, Timeout: 10 * time.Second},
		Predict: func(ctx context.Context, r *replicatefake.Run) (json.RawMessage, error) {
			var job string
			_ = json.Unmarshal(r.Input[replicatefake.InputJob], &job)
			select {
			case <-releaseOf(job):
				return json.RawMessage(`{"caption":"done"}`), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	})
	srv := httptest.NewServer(fake)
	defer srv.Close()
	defer fake.Close()

	hooks, err := processor.NewWebhooks(t.ingestURL, provider.DeriveWebhookKey(t.secret))
	if err != nil {
		return err
	}
	prov, err := provider.NewReplicate(provider.ReplicateConfig{
		URL: srv.URL, Token: replicatefake.DefaultToken, Model: "bench/pushed",
		PollMin: 10 * time.Minute, PollMax: 10 * time.Minute, Quiet: 10 * time.Minute,
		Webhooks: hooks,
		ExtraInput: func(req provider.Request) map[string]any {
			return map[string]any{replicatefake.InputJob: req.Job.ID}
		},
	})
	if err != nil {
		return err
	}
	reg, stopProc, err := benchProcessor(ctx, t, providersPushKind, prov, processor.Config{
		Concurrency: 8, MaxPerUser: n, ProviderInflight: n, Webhooks: hooks,
	}, false)
	if err != nil {
		return err
	}
	defer stopProc()

	// The browser: one WebSocket joined to the user's topic.
	user := "pushbench"
	var pushMu sync.Mutex
	pushed := map[string]time.Time{}
	client, err := dialWS(ctx, t.notifierURL, t.token(user), nil, func(f *phoenixtest.Frame, at time.Time) {
		if jp, ok := decodeJobPush(f); ok && jp.Job.Status == envelope.StatusSucceeded {
			pushMu.Lock()
			if _, seen := pushed[jp.Job.ID]; !seen {
				pushed[jp.Job.ID] = at
			}
			pushMu.Unlock()
		}
	})
	if err != nil {
		return err
	}
	defer client.Close()
	if err := joinWS(ctx, client, "user:"+user); err != nil {
		return err
	}

	start := time.Now()
	ids := make([]string, n)
	if err := publishJobs(ctx, t, n, func(i int) (string, string) {
		ids[i] = fmt.Sprintf("ph-%d-%d", start.UnixNano(), i)
		return user, ids[i]
	}, providersPushKind); err != nil {
		return err
	}
	if err := waitUntil(ctx, 2*time.Minute, func() bool {
		return fake.Running() == n && gathered(reg, "beamline_processor_detached") == float64(n)
	}); err != nil {
		return fmt.Errorf("push: %d predictions running, %v runs detached, want %d", fake.Running(), gathered(reg, "beamline_processor_detached"), n)
	}

	var lat []time.Duration
	for _, id := range ids {
		close(releaseOf(id))
		if err := waitUntil(ctx, 10*time.Second, func() bool {
			pushMu.Lock()
			defer pushMu.Unlock()
			_, ok := pushed[id]
			return ok
		}); err != nil {
			return fmt.Errorf("push: job %s: no succeeded push within 10 s", id)
		}
		pushMu.Lock()
		at := pushed[id]
		pushMu.Unlock()
		if sent, ok := clock.at(id); ok {
			lat = append(lat, at.Sub(sent))
		}
	}
	if len(lat) == 0 {
		return errNoFigures
	}
	base, err := natsHopLatency(ctx, t.natsURL, n)
	if err != nil {
		return err
	}
	params := map[string]any{"jobs": len(lat), "sequential": true, "polls": "off (10m)"}
	rep.addVs("providers", "webhook received → browser push p50", quantileMS(lat, 0.5), "ms", quantileMS(base, 0.5), params)
	rep.addVs("providers", "webhook received → browser push p99", quantileMS(lat, 0.99), "ms", quantileMS(base, 0.99), params)
	return nil
}

// natsHopLatency is the same-run floor of a push: n core NATS messages,
// one at a time, from a publisher to a subscriber on the same server.
func natsHopLatency(ctx context.Context, url string, n int) ([]time.Duration, error) {
	nc, err := nats.Connect(url, nats.Name("beambench-hop"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	got := make(chan time.Time, 1)
	sub, err := nc.Subscribe("beambench.hop", func(*nats.Msg) { got <- time.Now() })
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if err := nc.Publish("beambench.hop", []byte(`{"job":"x"}`)); err != nil {
			return nil, err
		}
		select {
		case at := <-got:
			out = append(out, at.Sub(t0))
		case <-time.After(5 * time.Second):
			return nil, fmt.Errorf("nats hop: no message in 5 s")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, nil
}
