package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/cogfake"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// countingPreviews counts the previews stored.
type countingPreviews struct {
	PreviewKeeper
	n atomic.Int64
}

func (c *countingPreviews) Preview(ctx context.Context, job, url string) (envelope.Preview, error) {
	c.n.Add(1)
	return c.PreviewKeeper.Preview(ctx, job, url)
}

// withPreviews configures the outputs bucket, the output keeper and the
// previews (signed with ingestSecret, as ingest verifies them).
func (e *env) withPreviews(cfg Config, interval time.Duration) (Config, *countingPreviews) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := outputs.CreateStore(ctx, e.js, outputs.StoreConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := outputs.NewFetcher(outputs.FetchConfig{AllowPrivate: true})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(f.Close)
	cfg.Outputs = &outputs.Keeper{Store: st, Fetcher: f}
	c := &countingPreviews{PreviewKeeper: &outputs.Previewer{Store: st, Fetcher: f, Signer: outputs.NewSigner(ingestSecret)}}
	cfg.Previews = c
	cfg.PreviewInterval = interval
	return cfg, c
}

// ingestAs starts ingest (races_test.go) and returns its URL and a
// token of user's.
func (e *env) ingestAs(user string) (string, string) {
	e.t.Helper()
	f := e.startIngest()
	tok, err := auth.Issue(ingestSecret, user, false, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return f.url, tok
}

// download GETs path from ingest (with token when not empty) and checks
// that it is a PNG.
func downloadPNG(t *testing.T, base, path, token string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("GET %s: %d %s: %.200s", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if _, err := png.Decode(bytes.NewReader(b)); err != nil {
		t.Fatalf("GET %s: not a PNG: %v", path, err)
	}
	return b
}

// checkPreviews runs an image job on the processor and checks what a
// browser sees: while it runs, a progress event names a preview whose
// signed URL (no token) and URL (alice's token) serve a PNG through
// ingest; the job's events carry several different previews, in progress
// events only; the final result names the stored output, and no preview.
func checkPreviews(t *testing.T, e *env, base, token string, j envelope.Job) {
	t.Helper()
	var running envelope.Snapshot
	testutil.WaitFor(t, 20*time.Second, func() bool {
		running = e.snapshot(j.ID)
		return running.Preview != nil || running.Status.Terminal()
	}, func() string { return "no preview while the job ran" })
	if running.Preview == nil {
		t.Fatalf("the job ended %s (result %.200s) before any preview was announced", running.Status, running.Result)
	}
	pv := running.Preview
	if pv.Output != outputs.PreviewName || pv.URL != outputs.Path(j.ID, outputs.PreviewName) || pv.ContentType != "image/png" ||
		!strings.HasPrefix(pv.SignedURL, pv.URL+"?") || pv.ExpiresAt == nil {
		t.Fatalf("preview %+v", pv)
	}
	downloadPNG(t, base, pv.SignedURL, "")
	downloadPNG(t, base, pv.URL, token)

	final := e.waitStatus(j.ID, envelope.StatusSucceeded, 30*time.Second)
	if final.Preview != nil {
		t.Errorf("the final snapshot still names a preview: %+v", final.Preview)
	}
	var res struct {
		URL outputs.Output `json:"url"`
	}
	if err := json.Unmarshal(final.Result, &res); err != nil || res.URL.ContentType != "image/png" {
		t.Fatalf("result %.300s: %v", final.Result, err)
	}
	downloadPNG(t, base, res.URL.URL, token)

	digests := map[string]bool{}
	for _, s := range e.events(j) {
		if s.Preview == nil {
			continue
		}
		if s.Status != envelope.StatusRunning {
			t.Fatalf("a %s event names a preview", s.Status)
		}
		digests[s.Preview.Digest] = true
	}
	if len(digests) < 2 {
		t.Fatalf("%d different previews announced, want several", len(digests))
	}
	t.Logf("%d different previews announced", len(digests))
}

// A Cog prediction's outputs while it runs (its "output" webhooks: the
// fake runs the sim with "image": true, which yields a PNG per step)
// become progress events naming the job's preview, served by ingest.
func TestCogOutputsWhileRunningBecomePreviews(t *testing.T) {
	e := newEnv(t)
	// Cog's webhooks reach a real ingest, which stores them in WEBHOOKS for
	// the processor (docs/design.md#webhooks).
	hooks := e.webhooks(e.startWebhookIngest(""))
	validate, predict := cogfake.SimModel()
	fake := cogfake.New(cogfake.Config{Slots: 2, Validate: validate, Predict: predict})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	prov, err := provider.NewCog(provider.CogConfig{URLs: []string{srv.URL}, Webhooks: hooks, Quiet: time.Minute, DropKeys: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := e.withPreviews(withProvider(baseConfig(t), prov), time.Millisecond)
	cfg.Webhooks = hooks
	base, token := e.ingestAs("alice")
	e.start(cfg)

	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"steps": 4, "duration_ms": 2000, "image": true})
	e.submit(j)
	checkPreviews(t, e, base, token, j)
}

// The same for a Replicate prediction: its output while "processing", as
// polled.
func TestReplicateOutputsWhileRunningBecomePreviews(t *testing.T) {
	e := newEnv(t)
	validate, predict := replicatefake.SimModel()
	fake := replicatefake.New(replicatefake.Config{Validate: validate, Predict: predict})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	prov, err := provider.NewReplicate(provider.ReplicateConfig{
		URL: srv.URL, Token: replicatefake.DefaultToken, Model: "black-forest-labs/flux-schnell", DropKeys: []string{},
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond,
		ExtraInput: func(req provider.Request) map[string]any {
			return map[string]any{replicatefake.InputJob: req.Job.ID, replicatefake.InputAttempt: "1"}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := e.withPreviews(withProvider(baseConfig(t), prov), time.Millisecond)
	base, token := e.ingestAs("alice")
	e.start(cfg)

	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"steps": 4, "duration_ms": 2000, "image": true})
	e.submit(j)
	checkPreviews(t, e, base, token, j)
}

// At most one preview is stored per interval: a sim job that yields 9
// previews, with an interval longer than the test, stores the first and
// drops the rest (superseded, then the result came). Every later event
// still names that one preview.
func TestPreviewsAreThrottled(t *testing.T) {
	e := newEnv(t)
	cfg, counted := e.withPreviews(baseConfig(t), time.Hour)
	e.start(cfg)
	j := newJob("alice", "image", envelope.PriorityNormal, map[string]any{"steps": 10, "duration_ms": 500, "image": true})
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusSucceeded, 30*time.Second)
	digests := map[string]bool{}
	for _, s := range e.events(j) {
		if s.Preview != nil {
			digests[s.Preview.Digest] = true
		}
	}
	n := len(digests)
	if got := counted.n.Load(); got != 1 || n != 1 {
		t.Fatalf("previews stored %d, announced %d; want 1 and 1 within one interval", got, n)
	}
}

// repeatProvider reports the same output as a preview several times (a
// poll that sees an unchanged output), then succeeds.
type repeatProvider struct{}

func (repeatProvider) Name() string { return "repeat" }
func (repeatProvider) Call(ctx context.Context, req provider.Request) (json.RawMessage, error) {
	out := json.RawMessage(`["` + provider.SimPNGDataURL(1, 50) + `"]`)
	for i := 0; i < 20; i++ {
		if req.Preview != nil {
			req.Preview(bytes.Clone(out))
		}
		if err := flow.Sleep(ctx, 2*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return json.RawMessage(`"done"`), nil
}

// An output reported again unchanged is not stored again.
func TestUnchangedPreviewIsStoredOnce(t *testing.T) {
	e := newEnv(t)
	cfg, counted := e.withPreviews(withProvider(baseConfig(t), repeatProvider{}), time.Nanosecond)
	e.start(cfg)
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusSucceeded, 30*time.Second)
	if got := counted.n.Load(); got != 1 {
		t.Fatalf("the same preview was stored %d times, want 1", got)
	}
}
