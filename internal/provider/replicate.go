package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// Defaults of ReplicateConfig.
const (
	// DefaultReplicateURL is the base of the hosted Replicate API.
	DefaultReplicateURL = "https://api.replicate.com"
	// EnvReplicateToken holds the Replicate API token. It is a secret: it
	// comes from the environment, never from a flag, and is never logged.
	EnvReplicateToken = "REPLICATE_API_TOKEN"

	// DefaultReplicateRequestTimeout bounds one HTTP exchange with the API
	// (a create, a poll, a cancel).
	DefaultReplicateRequestTimeout = 30 * time.Second
	// DefaultReplicatePollMin and DefaultReplicatePollMax bound the waits
	// between polls of a prediction (and between tries after a 5xx or a
	// 429 without Retry-After). Replicate allows 3000 polls a minute per
	// account; a prediction polled at most every 5s costs 12 of them.
	DefaultReplicatePollMin = 250 * time.Millisecond
	DefaultReplicatePollMax = 5 * time.Second
	// DefaultReplicateBadAnswers is how many answers in a row to a poll
	// may be garbage (2xx but not a prediction object) before the call
	// gives up on the prediction.
	DefaultReplicateBadAnswers = 3
	// DefaultReplicateQuiet is how long a prediction with webhooks may go
	// without one before the call polls it (and then polls with backoff
	// until the next webhook), so a webhook that never comes never strands
	// a job.
	DefaultReplicateQuiet = 30 * time.Second
	// replicateLogsAllowance is the room a prediction object may take
	// beyond MaxResponse, for its logs and input.
	replicateLogsAllowance = 4 << 20
)

// ReplicateConfig configures the replicate provider. Zero values are the
// documented defaults.
type ReplicateConfig struct {
	// URL is the API base, before /v1. Default DefaultReplicateURL.
	URL string
	// Token is sent as `Authorization: Bearer <Token>`. Required; the
	// binaries read it from EnvReplicateToken.
	Token string
	// Model is what runs: "owner/name" (the model's latest version, POST
	// /v1/models/{owner}/{name}/predictions), or a version: a version id
	// or "owner/name:<version id>" (POST /v1/predictions). Required.
	Model string
	// Client sends the requests. Default: a client on a clone of
	// http.DefaultTransport.
	Client *http.Client
	// Name is what Name() returns (one breaker per name). Default
	// "replicate:" + Model.
	Name string
	// DropKeys are removed from the job's input before it is sent as the
	// prediction's input. nil means DefaultCogDroppedKeys ("sim"); an
	// empty non-nil slice drops nothing.
	DropKeys []string
	// ExtraInput, when set, adds keys to every prediction's input. Tests
	// use it to tell the fake's sim model the job and the attempt;
	// Replicate has no per-prediction context.
	ExtraInput func(req Request) map[string]any
	// Wait, when positive, asks for sync mode (`Prefer: wait=n`, whole
	// seconds in 1..60): the create answers with the finished prediction
	// when it finishes within Wait. Default 0: the create answers at once
	// and the call polls. Sync mode widens the window of a second
	// prediction to the whole wait: a call whose ctx ends while the create
	// is held open never learns the prediction's id, so it can neither
	// cancel it nor resume it. Use it only for models that finish well
	// within the job timeout.
	Wait time.Duration
	// MaxResponse bounds the output of a prediction; a larger succeeded
	// output is terminal (ErrResponseTooLarge). A prediction object may be
	// 4 MiB larger (its logs). Default DefaultHTTPMaxResponse.
	MaxResponse int64
	// RequestTimeout bounds one exchange. Default
	// DefaultReplicateRequestTimeout (plus Wait for a create).
	RequestTimeout time.Duration
	// PollMin and PollMax bound the backoff between polls. Defaults
	// DefaultReplicatePollMin, DefaultReplicatePollMax.
	PollMin, PollMax time.Duration
	// Now is the clock (Retry-After dates). Default time.Now.
	Now func() time.Time
	// Webhooks, when set, asks Replicate for webhooks (webhook,
	// webhook_events_filter) at Webhooks.URL (ingest, which verifies their
	// signature and stores them in JetStream): the call waits for them and
	// polls only after Quiet without one. nil: the call polls.
	Webhooks WebhookSource
	// Quiet is how long a prediction with webhooks may stay silent before
	// the call polls it. Default DefaultReplicateQuiet.
	Quiet time.Duration
	// Stream, when set, creates predictions with "stream": true and reads
	// their urls.stream (server-sent events) while waiting: output events
	// become previews (Request.Preview) and done or error polls the
	// prediction at once. The stream only accelerates the wait: the
	// outcome is always the prediction's (GET), and a stream that fails
	// (a non-200, a cut connection) leaves the wait to webhooks and polls,
	// as without it. A resumed wait (another run) has no stream.
	Stream bool
	// Logger logs what goes wrong without failing a job (a stream that
	// ended early). Default slog.Default().
	Logger *slog.Logger
}

// ReplicateConfigFromEnv returns a ReplicateConfig with the token from
// EnvReplicateToken. getenv is usually os.Getenv.
func ReplicateConfigFromEnv(getenv func(string) string) ReplicateConfig {
	return ReplicateConfig{Token: getenv(EnvReplicateToken)}
}

var (
	replicateModelRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*$`)
	replicateVersionRE = regexp.MustCompile(`^[a-f0-9]{32,128}$`)
)

// ValidReplicateModel reports whether s is a model ("owner/name") or a
// version (a version id, or "owner/name:<version id>").
func ValidReplicateModel(s string) bool {
	if owner, version, ok := strings.Cut(s, ":"); ok {
		return replicateModelRE.MatchString(owner) && replicateVersionRE.MatchString(version)
	}
	return replicateModelRE.MatchString(s) || replicateVersionRE.MatchString(s)
}

// NewReplicate returns the provider for the hosted Replicate API. Each
// Call:
//
//   - sends the job's input, without DropKeys, as the prediction's input:
//     POST /v1/models/{owner}/{name}/predictions for a model, POST
//     /v1/predictions with "version" for a version;
//   - polls GET urls.get with backoff (PollMin..PollMax) until the
//     prediction is succeeded, failed or canceled, reporting the
//     percentages its logs print as progress;
//   - when ctx ends, sends POST urls.cancel and returns a retryable error.
//
// Replicate's create is not idempotent. A create that failed without an
// answer saying nothing was created (a connection cut after the request
// was sent, a 5xx from a gateway, an unreadable 2xx) may still have
// started a prediction, which this call cannot learn the id of: that is
// the one window in which a job can start a second prediction (see
// docs/design.md#the-replicate-provider). Once the create answered, the
// call never creates again: it polls through 5xx, 429 and connection
// errors until ctx ends.
//
// 429 (throttled) is backpressure, not a failure: nothing was created (or
// the poll did not happen), so the call waits Retry-After (or a backoff
// when absent) and tries again, and every call of this provider waits
// too (the limit is per account). Only when ctx ends first does the call
// return a retryable error carrying the wait as flow.RetryAfterHint, so
// a throttled job is retried after the wait rather than at once.
//
// Outcomes: succeeded → the prediction's output (any JSON; files are URLs
// that expire, an hour on Replicate) is the job's result; failed or
// canceled → retryable wrapping ErrRemote; 401, 402, 403, 404, 422 and
// other 4xx on create → terminal *StatusError with Replicate's detail; a
// 4xx on a poll → terminal except 404 (the prediction is gone: retryable
// ErrRemote); 5xx on create and connection errors → retryable; a 2xx that
// is not a prediction object → retryable ErrInvalidResponse; an output
// over MaxResponse → terminal ErrResponseTooLarge.
func NewReplicate(cfg ReplicateConfig) (Provider, error) {
	p := &replicateProvider{
		client: cfg.Client, name: cfg.Name, drop: cfg.DropKeys, extra: cfg.ExtraInput, token: cfg.Token,
		wait: cfg.Wait, maxResponse: cfg.MaxResponse, reqTimeout: cfg.RequestTimeout,
		pollMin: cfg.PollMin, pollMax: cfg.PollMax, now: cfg.Now,
		hooks: cfg.Webhooks, quiet: cfg.Quiet, stream: cfg.Stream, log: cfg.Logger,
		finished: map[string]replicatePrediction{}, streams: map[string]string{},
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if cfg.URL == "" {
		cfg.URL = DefaultReplicateURL
	}
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: replicate URL %q must be an absolute http(s) URL", ErrInvalidConfig, cfg.URL)
	}
	// The base is the origin (and any prefix) before /v1; a URL given
	// with /v1 is taken as meant.
	p.base = strings.TrimSuffix(strings.TrimSuffix(u.String(), "/"), "/v1")
	if cfg.Token == "" {
		return nil, fmt.Errorf("%w: replicate needs an API token ($%s)", ErrInvalidConfig, EnvReplicateToken)
	}
	if !ValidReplicateModel(cfg.Model) {
		return nil, fmt.Errorf("%w: replicate model %q must be owner/name, a version id or owner/name:version", ErrInvalidConfig, cfg.Model)
	}
	if owner, _, ok := strings.Cut(cfg.Model, ":"); ok {
		// Sent whole: predictions.create takes "owner/name:version" too.
		p.model, p.version = owner, cfg.Model
	} else if replicateModelRE.MatchString(cfg.Model) {
		p.model = cfg.Model
	} else {
		p.version = cfg.Model
	}
	if cfg.Wait < 0 || cfg.Wait > 60*time.Second || cfg.MaxResponse < 0 || cfg.RequestTimeout < 0 || cfg.PollMin < 0 || cfg.PollMax < 0 || cfg.Quiet < 0 {
		return nil, fmt.Errorf("%w: replicate durations and sizes must not be negative, and wait at most 60s", ErrInvalidConfig)
	}
	if p.client == nil {
		p.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if p.name == "" {
		p.name = "replicate:" + cfg.Model
	}
	if p.drop == nil {
		p.drop = DefaultCogDroppedKeys
	}
	if p.maxResponse == 0 {
		p.maxResponse = DefaultHTTPMaxResponse
	}
	if p.reqTimeout == 0 {
		p.reqTimeout = DefaultReplicateRequestTimeout
	}
	if p.pollMin == 0 {
		p.pollMin = DefaultReplicatePollMin
	}
	if p.pollMax == 0 {
		p.pollMax = DefaultReplicatePollMax
	}
	if p.pollMax < p.pollMin {
		p.pollMax = p.pollMin
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.quiet == 0 {
		p.quiet = DefaultReplicateQuiet
	}
	return p, nil
}

type replicateProvider struct {
	base        string
	model       string // owner/name, or the owner/name of a version ("" for a bare id)
	version     string // a version (id or owner/name:id), or "" to run the model's latest
	token       string
	client      *http.Client
	name        string
	drop        []string
	extra       func(Request) map[string]any
	wait        time.Duration
	maxResponse int64
	reqTimeout  time.Duration
	pollMin     time.Duration
	pollMax     time.Duration
	now         func() time.Time
	hooks       WebhookSource
	quiet       time.Duration
	stream      bool
	log         *slog.Logger

	mu          sync.Mutex
	pausedUntil time.Time // a 429 pauses every call until then
	// finished holds the predictions a create answered already finished
	// (sync mode, Wait), until Await or Cancel takes them.
	finished map[string]replicatePrediction
	// streams holds the urls.stream of predictions this provider created
	// with Stream, until Park or Cancel takes them.
	streams map[string]string
}

var _ Resumable = (*replicateProvider)(nil)

func (p *replicateProvider) Name() string { return p.name }

// replicatePrediction is Replicate's prediction object (the fields
// Beamline reads).
type replicatePrediction struct {
	ID      string          `json:"id"`
	Status  string          `json:"status"`
	Output  json.RawMessage `json:"output"`
	Error   json.RawMessage `json:"error"`
	Logs    *string         `json:"logs"`
	URLs    map[string]string
	Metrics struct {
		PredictTime *float64 `json:"predict_time"`
	} `json:"metrics"`
	predictionTimes
}

func (r replicatePrediction) terminal() bool {
	return r.Status == "succeeded" || r.Status == "failed" || r.Status == "canceled"
}

func (r replicatePrediction) logs() string {
	if r.Logs == nil {
		return ""
	}
	return *r.Logs
}

// decodeReplicatePrediction reads a prediction object; anything else
// (another JSON value, no id, an unknown status) is an error.
func decodeReplicatePrediction(b []byte) (replicatePrediction, error) {
	var pred replicatePrediction
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return pred, errors.New("not a JSON object")
	}
	var raw struct {
		ID      string          `json:"id"`
		Status  string          `json:"status"`
		Output  json.RawMessage `json:"output"`
		Error   json.RawMessage `json:"error"`
		Logs    *string         `json:"logs"`
		URLs    map[string]any  `json:"urls"`
		Metrics json.RawMessage `json:"metrics"`
		predictionTimes
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return pred, err
	}
	if raw.ID == "" {
		return pred, errors.New("no prediction id")
	}
	switch raw.Status {
	case "starting", "processing", "succeeded", "failed", "canceled":
	default:
		return pred, fmt.Errorf("unknown prediction status %q", raw.Status)
	}
	pred = replicatePrediction{ID: raw.ID, Status: raw.Status, Output: raw.Output, Error: raw.Error, Logs: raw.Logs,
		predictionTimes: raw.predictionTimes}
	if len(raw.URLs) > 0 {
		pred.URLs = map[string]string{}
		for k, v := range raw.URLs {
			if s, ok := v.(string); ok {
				pred.URLs[k] = s
			}
		}
	}
	// Metrics are informative: a malformed object is ignored, not fatal.
	_ = json.Unmarshal(raw.Metrics, &pred.Metrics)
	return pred, nil
}

// replicateProblem is Replicate's error body (problem details).
type replicateProblem struct {
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

// statusError turns a non-2xx answer into a *StatusError whose Body is
// Replicate's "title: detail" when the body has them.
func replicateStatusError(code int, body []byte) *StatusError {
	var pr replicateProblem
	msg := snippet(body)
	if json.Unmarshal(body, &pr) == nil && (pr.Title != "" || pr.Detail != "") {
		msg = snippet([]byte(strings.TrimPrefix(pr.Title+": "+pr.Detail, ": ")))
	}
	return &StatusError{StatusCode: code, Body: msg}
}

func (p *replicateProvider) input(req Request) (json.RawMessage, error) {
	in, err := modelInput(req.Job.Input, p.drop)
	if err != nil || p.extra == nil {
		return in, err
	}
	var m map[string]any
	if err := json.Unmarshal(in, &m); err != nil {
		return nil, err
	}
	for k, v := range p.extra(req) {
		m[k] = v
	}
	return json.Marshal(m)
}

func (p *replicateProvider) Call(ctx context.Context, req Request) (json.RawMessage, error) {
	h, err := p.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	out, err := p.Await(ctx, h, req)
	if err != nil && ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.Background(), min(p.reqTimeout, 5*time.Second))
		_ = p.Cancel(cctx, h)
		cancel()
	}
	return out, err
}

// errThrottled marks a 429: nothing happened, wait and try again.
type errThrottled struct{ wait time.Duration }

func (e *errThrottled) Error() string { return "replicate: throttled (429)" }

// Start creates the prediction. A 429 is waited out (ctx bounds the wait);
// every other failure returns.
func (p *replicateProvider) Start(ctx context.Context, req Request) (Handle, error) {
	if err := ctx.Err(); err != nil {
		return Handle{}, flow.Retryable(fmt.Errorf("replicate provider: %w", err), 0)
	}
	input, err := p.input(req)
	if err != nil {
		return Handle{}, flow.Terminal(fmt.Errorf("replicate provider: %w", err))
	}
	body := map[string]any{"input": input}
	if p.hooks != nil {
		body["webhook"] = p.hooks.URL(envelope.WebhookReplicate, req.Job.ID, max(req.Prediction, 1))
		body["webhook_events_filter"] = []string{"start", "output", "logs", "completed"}
	}
	if p.stream {
		body["stream"] = true
	}
	target := p.base + "/v1/models/" + p.model + "/predictions"
	if p.version != "" {
		body["version"] = p.version
		target = p.base + "/v1/predictions"
	}
	b, err := json.Marshal(body)
	if err != nil {
		return Handle{}, flow.Terminal(fmt.Errorf("replicate provider: encode request: %w", err))
	}
	for try := 1; ; try++ {
		// Once sent, a create is not cut short by ctx (a DELETE, the job
		// timeout): Replicate may create the prediction anyway, and only its
		// answer names it, so that the caller can cancel it (Call, the
		// processor's settleRemote) instead of leaving it running, paid for
		// and unwatched. Without sync mode the answer comes at once; the
		// request is still bounded by RequestTimeout. A 429 pause is waited
		// with ctx first.
		sendCtx := ctx
		if p.wait == 0 {
			if err := p.waitPause(ctx); err != nil {
				return Handle{}, err
			}
			sendCtx = context.WithoutCancel(ctx)
		}
		pred, err := p.do(sendCtx, http.MethodPost, target, b, p.wait)
		var th *errThrottled
		switch {
		case err == nil:
			h := Handle{Provider: p.name, ID: pred.ID, Attempt: max(req.Attempt, 1),
				GetURL:    p.sameOrigin(pred.URLs["get"], "/v1/predictions/"+url.PathEscape(pred.ID)),
				CancelURL: p.sameOrigin(pred.URLs["cancel"], "/v1/predictions/"+url.PathEscape(pred.ID)+"/cancel")}
			if pred.terminal() { // sync mode: finished within Wait
				p.mu.Lock()
				p.finished[h.ID] = pred
				p.mu.Unlock()
			} else if su := pred.URLs["stream"]; p.stream && su != "" {
				// Followed on the API's origin only, as get and cancel
				// (it carries the token); elsewhere the wait polls.
				if p.sameOrigin(su, "") == su {
					p.mu.Lock()
					p.streams[h.ID] = su
					p.mu.Unlock()
				}
			}
			return h, nil
		case errors.As(err, &th):
			if werr := p.backoff(ctx, try, th.wait); werr != nil {
				return Handle{}, werr
			}
		default:
			return Handle{}, err
		}
	}
}

// sameOrigin returns u when it is on the API's origin (a URL from an
// answer is only followed there, with the token), else base+path.
func (p *replicateProvider) sameOrigin(u, path string) string {
	if u != "" && (u == p.base || strings.HasPrefix(u, p.base+"/")) {
		return u
	}
	return p.base + path
}

// Await polls the prediction until it is terminal or ctx ends. With
// webhooks it first reads the job's last final delivery (a prediction that
// ended while no processor waited, one direct get), then waits for the
// deliveries and polls only after Quiet without one, then with backoff
// until the next delivery. Only a delivery of prediction h.ID counts:
// ingest checked its signature, not that it is about this job's work.
func (p *replicateProvider) Await(ctx context.Context, h Handle, req Request) (json.RawMessage, error) {
	type outcome struct {
		res json.RawMessage
		err error
	}
	c := make(chan outcome, 1)
	p.Park(ctx, h, req, func(res json.RawMessage, err error) { c <- outcome{res, err} })
	o := <-c
	return o.res, o.err
}

// waitDelivery waits d for a webhook delivery of prediction id: got when
// one came (deliveries of other predictions are skipped without cutting
// the wait short), an error when ctx ended. A nil deliveries just sleeps.
func (p *replicateProvider) waitDelivery(ctx context.Context, id string, deliveries <-chan WebhookDelivery, d time.Duration) (pred replicatePrediction, got bool, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return pred, false, ctx.Err()
		case <-t.C:
			return pred, false, nil
		case hd := <-deliveries:
			if pred, ok := replicateDelivery(id, hd); ok {
				return pred, true, nil
			}
		}
	}
}

// replicateDelivery decodes a webhook delivery: ok when it is a prediction
// object of prediction id.
func replicateDelivery(id string, d WebhookDelivery) (replicatePrediction, bool) {
	pred, err := decodeReplicatePrediction(d.Body)
	if err != nil || pred.ID != id {
		return replicatePrediction{}, false
	}
	return pred, true
}

// backoff waits after a throttled create: Retry-After when given, else a
// growing backoff. It pauses the other calls too.
func (p *replicateProvider) backoff(ctx context.Context, try int, wait time.Duration) error {
	if wait <= 0 {
		wait = flow.Backoff(try, p.pollMin, p.pollMax, 0.2, nil)
	}
	return p.pause(ctx, wait)
}

// pause records that the API asked every call to wait d, then waits until
// the pause (possibly set longer by another call) is over or ctx ends. A
// wait cut by ctx is a retryable error with the remaining wait as its hint.
func (p *replicateProvider) pause(ctx context.Context, d time.Duration) error {
	p.mu.Lock()
	if until := p.now().Add(d); until.After(p.pausedUntil) {
		p.pausedUntil = until
	}
	p.mu.Unlock()
	return p.waitPause(ctx)
}

// waitPause waits out a pause set by a 429.
func (p *replicateProvider) waitPause(ctx context.Context) error {
	p.mu.Lock()
	d := p.pausedUntil.Sub(p.now())
	p.mu.Unlock()
	if d <= 0 {
		return nil
	}
	if err := flow.Sleep(ctx, d); err != nil {
		p.mu.Lock()
		left := p.pausedUntil.Sub(p.now())
		p.mu.Unlock()
		return flow.Retryable(fmt.Errorf("replicate provider: throttled by Replicate (429): %w", err), max(left, time.Second))
	}
	return nil
}

// do sends one request to the API and reads a prediction object. A 429 is
// *errThrottled; other non-2xx answers are classified *StatusError.
func (p *replicateProvider) do(ctx context.Context, method, target string, body []byte, wait time.Duration) (replicatePrediction, error) {
	if err := p.waitPause(ctx); err != nil {
		return replicatePrediction{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, p.reqTimeout+wait)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hreq, err := http.NewRequestWithContext(rctx, method, target, rd)
	if err != nil {
		return replicatePrediction{}, flow.Terminal(fmt.Errorf("replicate provider: build request: %w", err))
	}
	hreq.Header.Set("Authorization", "Bearer "+p.token)
	hreq.Header.Set("Accept", "application/json")
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if wait > 0 {
		hreq.Header.Set("Prefer", fmt.Sprintf("wait=%d", max(int(wait/time.Second), 1)))
	}
	what := method + " " + strings.TrimPrefix(target, p.base)
	resp, err := p.client.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return replicatePrediction{}, flow.Retryable(fmt.Errorf("replicate provider: %w", ctx.Err()), 0)
		}
		return replicatePrediction{}, flow.Retryable(fmt.Errorf("replicate provider: %s: %w", what, err), 0)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
	case c == http.StatusTooManyRequests:
		return replicatePrediction{}, &errThrottled{wait: parseRetryAfter(resp.Header.Get("Retry-After"), p.now())}
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		se := replicateStatusError(c, b)
		if c >= 400 && c < 500 && c != http.StatusRequestTimeout && c != http.StatusTooEarly {
			return replicatePrediction{}, flow.Terminal(fmt.Errorf("replicate provider: %s: %w", what, se))
		}
		return replicatePrediction{}, flow.Retryable(fmt.Errorf("replicate provider: %s: %w", what, se),
			parseRetryAfter(resp.Header.Get("Retry-After"), p.now()))
	}
	// The object carries the logs besides the output: allow them room, so
	// a chatty model is not cut off; outcome bounds the output itself.
	limit := p.maxResponse + replicateLogsAllowance
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return replicatePrediction{}, flow.Retryable(fmt.Errorf("replicate provider: %w", ctx.Err()), 0)
		}
		return replicatePrediction{}, flow.Retryable(fmt.Errorf("replicate provider: %s: reading the answer: %w", what, err), 0)
	}
	if int64(len(b)) > limit {
		return replicatePrediction{}, flow.Terminal(fmt.Errorf("%w: replicate %s: answer over %d bytes", ErrResponseTooLarge, what, limit))
	}
	pred, err := decodeReplicatePrediction(b)
	if err != nil {
		return replicatePrediction{}, flow.Retryable(fmt.Errorf("%w: replicate %s answered %d with something that is not a prediction object (%v): %s",
			ErrInvalidResponse, what, resp.StatusCode, err, snippet(b)), 0)
	}
	return pred, nil
}

// outcome classifies a terminal prediction.
func (p *replicateProvider) outcome(id string, pred replicatePrediction, progress *progressTracker) (json.RawMessage, error) {
	progress.fromLogs(pred.logs())
	progress.timed(pred.timing(pred.Metrics.PredictTime))
	return predictionOutcome("replicate", id, pred.Status, pred.Output, pred.Error, p.maxResponse, progress)
}

// Cancel sends POST urls.cancel. A prediction already finished is
// answered as it is; a 404 means there is nothing left to cancel.
func (p *replicateProvider) Cancel(ctx context.Context, h Handle) error {
	p.mu.Lock()
	delete(p.finished, h.ID)
	delete(p.streams, h.ID)
	p.mu.Unlock()
	target := p.sameOrigin(h.CancelURL, "/v1/predictions/"+url.PathEscape(h.ID)+"/cancel")
	_, err := p.do(ctx, http.MethodPost, target, nil, 0)
	var se *StatusError
	if errors.As(err, &se) && se.StatusCode == http.StatusNotFound {
		return nil
	}
	var th *errThrottled
	if errors.As(err, &th) {
		return flow.Retryable(fmt.Errorf("replicate provider: cancel %s: %w", h.ID, th), th.wait)
	}
	return err
}
