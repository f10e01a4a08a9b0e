package provider

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// Defaults of CogConfig.
const (
	// DefaultCogURL is where a Cog container listens by default (port
	// 5000, python/cog/server/http.py and coglet).
	DefaultCogURL = "http://127.0.0.1:5000"

	// DefaultCogRequestTimeout bounds one HTTP exchange with a Cog server
	// that is not a synchronous prediction: an async create, a re-attach,
	// a cancel, a health check.
	DefaultCogRequestTimeout = 30 * time.Second
	// DefaultCogBackoffMin and DefaultCogBackoffMax bound the waits between
	// tries while every server answers 409 (all slots busy) and between
	// re-attaches of a prediction whose webhook is late.
	DefaultCogBackoffMin = 50 * time.Millisecond
	DefaultCogBackoffMax = 5 * time.Second
	// DefaultCogQuiet is how long an async prediction may go without a
	// webhook before the call re-attaches to it (PUT of the same id).
	DefaultCogQuiet = 30 * time.Second
)

// DefaultCogDroppedKeys are the keys of a job's input that are Beamline's
// own (input.sim drives the sim provider) and are not sent to the model.
var DefaultCogDroppedKeys = []string{"sim"}

// Context keys of the prediction's context (Cog hands it to the model as
// current_scope().context): the job and the attempt, for the model's logs.
const (
	CogContextJob     = "beamline_job"
	CogContextAttempt = "beamline_attempt"
)

// CogConfig configures the cog provider. Zero values are the documented
// defaults.
type CogConfig struct {
	// URLs are the Cog servers serving this kind (a GPU farm); each is the
	// server's base URL, e.g. http://gpu-1:5000. Default DefaultCogURL
	// (a local `docker run -p 5000:5000` Cog container).
	URLs []string
	// Client sends the requests. Default: a client on a clone of
	// http.DefaultTransport.
	Client *http.Client
	// Name is what Name() returns (one breaker per name). Default "cog".
	Name string
	// DropKeys are removed from the job's input before it is sent as the
	// prediction's input. nil means DefaultCogDroppedKeys; an empty non-nil
	// slice drops nothing (the conformance test drives a fake model with
	// input.sim).
	DropKeys []string
	// Webhooks, when set, makes predictions asynchronous: created with
	// `Prefer: respond-async` and a webhook at Webhooks.URL (ingest, which
	// stores the deliveries in JetStream), whose deliveries end the call.
	// nil: each prediction is one synchronous PUT whose response carries
	// the outcome (Cog offers no polling).
	Webhooks WebhookSource
	// MaxResponse bounds a prediction object read from Cog, and so the
	// output; a larger succeeded output is terminal (ErrResponseTooLarge).
	// Default DefaultHTTPMaxResponse.
	MaxResponse int64
	// RequestTimeout bounds one exchange that is not a synchronous
	// prediction. Default DefaultCogRequestTimeout.
	RequestTimeout time.Duration
	// BackoffMin and BackoffMax bound the backoff of 409 waits and
	// re-attaches. Defaults DefaultCogBackoffMin, DefaultCogBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Quiet is how long an async prediction may stay silent before the
	// call re-attaches to it. Default DefaultCogQuiet.
	Quiet time.Duration
}

// ParseCogURLs splits the -cog-url flag (URL[,URL...]); empty parts are
// skipped, so "" gives nil (the default server).
func ParseCogURLs(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// HealthChecker is implemented by providers that can tell whether their
// remote side can take work (readiness, breakers).
type HealthChecker interface {
	// Health returns nil when at least one remote server can take (or
	// queue) work, else an error saying why not.
	Health(ctx context.Context) error
}

// NewCog returns the provider for Cog model servers (their HTTP API is
// github.com/replicate/cog/docs/http.md). Each Call:
//
//   - sends the job's input, without DropKeys, as the prediction's input,
//     with PUT /predictions/{id}; id is CogPredictionID(job, attempt), so a
//     repeated PUT (a retry, a second Call of the same attempt) re-attaches
//     to the prediction while it runs instead of starting another: Cog
//     answers a PUT of an id in flight with 202 and its current state;
//   - with Webhooks: `Prefer: respond-async` and a webhook; the call waits
//     for the completed delivery, and re-attaches (PUT of the same id, with
//     backoff) when none came for Quiet. Without: a synchronous PUT.
//   - treats 409 (all slots busy) as backpressure: it tries the other
//     servers, then waits with backoff until ctx ends; never an error by
//     itself. Servers are tried round robin, skipping those whose last
//     health check was not READY or BUSY;
//   - when ctx ends, sends POST /predictions/{id}/cancel and returns a
//     retryable error.
//
// Outcomes: succeeded → the prediction's output (any JSON; a file is a
// data: URL) is the job's result; failed or canceled → retryable wrapping
// ErrRemote (the next attempt is a new prediction); 422 (input refused by
// the model) and other 4xx → terminal *StatusError; 5xx, 503 (setup not
// finished), connection errors → retryable once every server failed; a
// body that is not a prediction object → retryable ErrInvalidResponse; an
// output over MaxResponse → terminal ErrResponseTooLarge.
func NewCog(cfg CogConfig) (Provider, error) {
	if len(cfg.URLs) == 0 {
		cfg.URLs = []string{DefaultCogURL}
	}
	p := &cogProvider{
		client: cfg.Client, name: cfg.Name, drop: cfg.DropKeys, hooks: cfg.Webhooks,
		maxResponse: cfg.MaxResponse, reqTimeout: cfg.RequestTimeout,
		backoffMin: cfg.BackoffMin, backoffMax: cfg.BackoffMax, quiet: cfg.Quiet,
		placed: map[string]*cogServer{},
	}
	for _, raw := range cfg.URLs {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: cog URL %q must be an absolute http(s) URL", ErrInvalidConfig, raw)
		}
		p.servers = append(p.servers, &cogServer{base: strings.TrimSuffix(u.String(), "/")})
	}
	if cfg.MaxResponse < 0 || cfg.RequestTimeout < 0 || cfg.BackoffMin < 0 || cfg.BackoffMax < 0 || cfg.Quiet < 0 {
		return nil, fmt.Errorf("%w: cog durations and sizes must not be negative", ErrInvalidConfig)
	}
	if p.client == nil {
		p.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	p.name = cmp.Or(p.name, "cog")
	if p.drop == nil {
		p.drop = DefaultCogDroppedKeys
	}
	p.maxResponse = cmp.Or(p.maxResponse, DefaultHTTPMaxResponse)
	p.reqTimeout = cmp.Or(p.reqTimeout, DefaultCogRequestTimeout)
	p.backoffMin = cmp.Or(p.backoffMin, DefaultCogBackoffMin)
	p.backoffMax = cmp.Or(p.backoffMax, DefaultCogBackoffMax)
	if p.backoffMax < p.backoffMin {
		p.backoffMax = p.backoffMin
	}
	p.quiet = cmp.Or(p.quiet, DefaultCogQuiet)
	return p, nil
}

type cogProvider struct {
	servers     []*cogServer
	client      *http.Client
	name        string
	drop        []string
	hooks       WebhookSource
	maxResponse int64
	reqTimeout  time.Duration
	backoffMin  time.Duration
	backoffMax  time.Duration
	quiet       time.Duration
	rr          atomic.Uint64

	mu sync.Mutex
	// placed remembers which server holds a prediction in flight: Cog's
	// idempotency is per server, so a re-attach must go to the same one.
	placed map[string]*cogServer
}

var (
	_ Provider      = (*cogProvider)(nil)
	_ HealthChecker = (*cogProvider)(nil)
)

type cogServer struct {
	base string

	mu      sync.Mutex
	status  string // last health-check status, "" unknown
	checked time.Time
}

// usable reports whether the server's last health check lets it take
// work. DEFUNCT (the server broke and needs a restart) and SETUP_FAILED
// (the model's setup failed) do not pass by themselves: such a server
// stays out of the rotation until a health check (Health, which the
// processor calls every few seconds) says otherwise. Any other status
// (STARTING, UNHEALTHY, unreachable, a 503) keeps it out for 5 seconds.
func (s *cogServer) usable(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.status {
	case "", "READY", "BUSY":
		return true
	case "DEFUNCT", "SETUP_FAILED":
		return false
	}
	return now.Sub(s.checked) > 5*time.Second
}

// busy reports whether the server recently said all its slots were taken.
func (s *cogServer) busy(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status == "BUSY" && now.Sub(s.checked) <= time.Second
}

func (s *cogServer) setStatus(status string, now time.Time) {
	s.mu.Lock()
	s.status, s.checked = status, now
	s.mu.Unlock()
}

func (p *cogProvider) Name() string { return p.name }

var cogIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// CogPredictionID is the Cog prediction id of one attempt at a job: 26
// lower-case base32 characters (the form Cog's http.md recommends) of a
// hash of both, so every process computes the same id.
func CogPredictionID(jobID string, attempt int) string {
	sum := sha256.Sum256([]byte("beamline/cog\x00" + jobID + "\x00" + strconv.Itoa(max(attempt, 1))))
	return strings.ToLower(cogIDEncoding.EncodeToString(sum[:]))[:26]
}

// cogPrediction is Cog's prediction object (the fields Beamline reads).
type cogPrediction struct {
	ID      string          `json:"id"`
	Status  string          `json:"status"`
	Output  json.RawMessage `json:"output"`
	Error   json.RawMessage `json:"error"`
	Logs    string          `json:"logs"`
	Metrics struct {
		PredictTime *float64 `json:"predict_time"`
	} `json:"metrics"`
	predictionTimes
}

func (c cogPrediction) terminal() bool {
	return c.Status == "succeeded" || c.Status == "failed" || c.Status == "canceled"
}

// decodeCogPrediction reads a prediction object; anything else is an error.
func decodeCogPrediction(b []byte) (cogPrediction, error) {
	var pred cogPrediction
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return pred, errors.New("not a JSON object")
	}
	if err := json.Unmarshal(b, &pred); err != nil {
		return pred, err
	}
	switch pred.Status {
	case "starting", "processing", "succeeded", "failed", "canceled":
		return pred, nil
	default:
		return pred, fmt.Errorf("unknown prediction status %q", pred.Status)
	}
}

type cogRequestBody struct {
	ID                  string            `json:"id"`
	Input               json.RawMessage   `json:"input"`
	Context             map[string]string `json:"context,omitempty"`
	Webhook             string            `json:"webhook,omitempty"`
	WebhookEventsFilter []string          `json:"webhook_events_filter,omitempty"`
}

// cogInput is the job's input without the dropped keys.
func (p *cogProvider) cogInput(in json.RawMessage) (json.RawMessage, error) {
	out, err := modelInput(in, p.drop)
	if err != nil {
		return nil, fmt.Errorf("cog provider: %w", err)
	}
	return out, nil
}

func (p *cogProvider) Call(ctx context.Context, req Request) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, flow.Retryable(fmt.Errorf("cog provider: %w", err), 0)
	}
	n := max(req.Attempt, 1)
	id := CogPredictionID(req.Job.ID, n)
	b, err := p.requestBody(req, id, n)
	if err != nil {
		return nil, err
	}
	progress := newRequestTracker(req)
	var deliveries <-chan WebhookDelivery
	if p.hooks != nil {
		c, stop := p.hooks.Watch(envelope.WebhookCog, req.Job.ID)
		defer stop()
		deliveries = c
		// The prediction may have ended while nobody waited (a call
		// re-attaching after a crash): its outcome is already stored, and
		// a PUT would start it again.
		if out, ok, err := p.alreadyEnded(ctx, req.Job.ID, id, progress); ok {
			return out, err
		}
	}
	pred, srv, err := p.create(ctx, id, b, p.hooks != nil)
	if err != nil {
		return nil, err
	}
	out, err := p.await(ctx, req.Job.ID, id, b, srv, pred, deliveries, progress)
	if err != nil && ctx.Err() != nil {
		p.cancelRemote(srv, id)
	}
	p.unplace(id)
	return out, err
}

// requestBody is the PUT body of prediction id (number n of the job) for
// req: the job's input without the dropped keys, the context, and the
// webhook when async.
func (p *cogProvider) requestBody(req Request, id string, n int) ([]byte, error) {
	input, err := p.cogInput(req.Job.Input)
	if err != nil {
		return nil, flow.Terminal(err)
	}
	body := cogRequestBody{
		ID: id, Input: input,
		Context: map[string]string{CogContextJob: req.Job.ID, CogContextAttempt: strconv.Itoa(max(req.Attempt, 1))},
	}
	if p.hooks != nil {
		body.Webhook = p.hooks.URL(envelope.WebhookCog, req.Job.ID, n)
		body.WebhookEventsFilter = []string{"start", "output", "logs", "completed"}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, flow.Terminal(fmt.Errorf("cog provider: encode request: %w", err))
	}
	return b, nil
}

// create sends the PUT to a server with a free slot and returns the
// prediction object it answered (the final one for a synchronous PUT).
// async adds `Prefer: respond-async`.
func (p *cogProvider) create(ctx context.Context, id string, body []byte, async bool) (cogPrediction, *cogServer, error) {
	for try := 0; ; try++ {
		busy := false
		var lastErr error
		for _, srv := range p.order(id) {
			pred, err := p.put(ctx, srv, id, body, async)
			var se *StatusError
			switch {
			case err == nil:
				p.place(id, srv)
				return pred, srv, nil
			case ctx.Err() != nil:
				// The PUT may have started the prediction (Cog also
				// cancels a synchronous one whose connection drops):
				// cancel it explicitly.
				p.cancelRemote(srv, id)
				return pred, nil, flow.Retryable(fmt.Errorf("cog provider: %w", ctx.Err()), 0)
			case errors.As(err, &se) && se.StatusCode == http.StatusConflict:
				busy = true
				srv.setStatus("BUSY", time.Now())
			case flow.IsTerminal(err):
				return pred, nil, err
			default:
				lastErr = err
			}
		}
		if !busy {
			if lastErr == nil {
				lastErr = flow.Retryable(errors.New("cog provider: no Cog server is ready (health check)"), 0)
			}
			return cogPrediction{}, nil, lastErr
		}
		// Every server that answered has all its slots busy: wait for one.
		if err := flow.Sleep(ctx, flow.Backoff(try+1, p.backoffMin, p.backoffMax, 0.2, nil)); err != nil {
			return cogPrediction{}, nil, flow.Retryable(fmt.Errorf("cog provider: waiting for a free prediction slot: %w", err), 0)
		}
	}
}

// order is the servers to try for id: the one holding it first, then
// round robin over the usable ones.
func (p *cogProvider) order(id string) []*cogServer {
	p.mu.Lock()
	held := p.placed[id]
	p.mu.Unlock()
	if held != nil {
		return []*cogServer{held}
	}
	n := len(p.servers)
	start := int(p.rr.Add(1) % uint64(n))
	now := time.Now()
	out := make([]*cogServer, 0, n)
	var busy []*cogServer
	for i := range n {
		switch s := p.servers[(start+i)%n]; {
		case !s.usable(now):
		case s.busy(now):
			busy = append(busy, s) // tried last: it just answered 409
		default:
			out = append(out, s)
		}
	}
	return append(out, busy...)
}

func (p *cogProvider) place(id string, srv *cogServer) {
	p.mu.Lock()
	p.placed[id] = srv
	p.mu.Unlock()
}

func (p *cogProvider) unplace(id string) {
	p.mu.Lock()
	delete(p.placed, id)
	p.mu.Unlock()
}

// put sends PUT /predictions/{id}. A 2xx answer must be a prediction
// object, except the 202 of a fresh async create ({"id","status"}).
func (p *cogProvider) put(ctx context.Context, srv *cogServer, id string, body []byte, async bool) (cogPrediction, error) {
	rctx, cancel := ctx, context.CancelFunc(func() {})
	if async {
		rctx, cancel = context.WithTimeout(ctx, p.reqTimeout)
	}
	defer cancel()
	hreq, err := http.NewRequestWithContext(rctx, http.MethodPut, srv.base+"/predictions/"+url.PathEscape(id), bytes.NewReader(body))
	if err != nil {
		return cogPrediction{}, flow.Terminal(fmt.Errorf("cog provider: build request: %w", err))
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	if async {
		hreq.Header.Set("Prefer", "respond-async")
	}
	resp, err := p.client.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return cogPrediction{}, ctx.Err()
		}
		return cogPrediction{}, flow.Retryable(fmt.Errorf("cog provider: %s: %w", srv.base, err), 0)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()
	switch c := resp.StatusCode; {
	case c == http.StatusOK || c == http.StatusAccepted:
	case c == http.StatusConflict:
		return cogPrediction{}, &StatusError{StatusCode: c}
	case c >= 400 && c < 500 && c != http.StatusTooManyRequests && c != http.StatusRequestTimeout:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, errSnippetLen+1))
		return cogPrediction{}, flow.Terminal(&StatusError{StatusCode: c, Body: snippet(b)})
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, errSnippetLen+1))
		if c == http.StatusServiceUnavailable {
			srv.setStatus("STARTING", time.Now())
		}
		return cogPrediction{}, flow.Retryable(&StatusError{StatusCode: c, Body: snippet(b)},
			parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, p.maxResponse+1))
	if err != nil {
		if ctx.Err() != nil {
			return cogPrediction{}, ctx.Err()
		}
		return cogPrediction{}, flow.Retryable(fmt.Errorf("cog provider: %s: reading the answer: %w", srv.base, err), 0)
	}
	if int64(len(b)) > p.maxResponse {
		return cogPrediction{}, flow.Terminal(fmt.Errorf("%w: cog prediction %s: answer over %d bytes", ErrResponseTooLarge, id, p.maxResponse))
	}
	pred, err := decodeCogPrediction(b)
	if err != nil {
		return cogPrediction{}, flow.Retryable(fmt.Errorf("%w: cog %s answered %d with something that is not a prediction object (%v): %s",
			ErrInvalidResponse, srv.base, resp.StatusCode, err, snippet(b)), 0)
	}
	if pred.ID != "" && pred.ID != id {
		return cogPrediction{}, flow.Retryable(fmt.Errorf("%w: cog %s answered for prediction %q, asked %q",
			ErrInvalidResponse, srv.base, pred.ID, id), 0)
	}
	return pred, nil
}

// await turns the created prediction into the call's outcome.
func (p *cogProvider) await(ctx context.Context, job, id string, body []byte, srv *cogServer, pred cogPrediction,
	deliveries <-chan WebhookDelivery, progress *progressTracker) (json.RawMessage, error) {
	if p.hooks == nil {
		// Synchronous: a 200 is the outcome. A 202 means the id was
		// already in flight (another call or process started it): poll
		// with a re-PUT until it is no longer in flight; the re-PUT that
		// follows its end starts the prediction again and waits, since
		// without a webhook Cog cannot tell anyone how it ended.
		for try := 0; !pred.terminal(); try++ {
			progress.fromLogs(pred.Logs)
			progress.output(pred.Output)
			if err := flow.Sleep(ctx, flow.Backoff(try+1, p.backoffMin, p.backoffMax, 0.2, nil)); err != nil {
				return nil, flow.Retryable(fmt.Errorf("cog provider: %w", err), 0)
			}
			next, s, err := p.create(ctx, id, body, false)
			if err != nil {
				return nil, err
			}
			pred, srv = next, s
		}
		return p.outcome(id, pred, progress)
	}
	if pred.terminal() {
		return p.outcome(id, pred, progress)
	}
	quiet := time.NewTimer(p.quiet)
	defer quiet.Stop()
	for try := 0; ; {
		select {
		case <-ctx.Done():
			return nil, flow.Retryable(fmt.Errorf("cog provider: prediction %s: %w", id, ctx.Err()), 0)
		case hd := <-deliveries:
			d, ok := cogDelivery(id, hd)
			if !ok {
				continue // another prediction of the job, or garbage
			}
			if d.terminal() {
				return p.outcome(id, d, progress)
			}
			progress.fromLogs(d.Logs)
			progress.output(d.Output)
			try = 0
			quiet.Reset(p.quiet)
		case <-quiet.C:
			// No webhook for Quiet. The final one may be stored yet not
			// dispatched here (a consumer that restarted): read it.
			if out, ok, err := p.alreadyEnded(ctx, job, id, progress); ok {
				return out, err
			}
			// Else re-attach with a synchronous PUT of the same id. While
			// the prediction runs Cog answers at once with its state
			// (202), and the wait goes on. If it ended and its completed
			// webhook was lost, Cog starts it again and this PUT waits for
			// the outcome in its response: the one case of a second
			// prediction for one attempt, and the way a lost webhook never
			// strands a call.
			next, _, err := p.create(ctx, id, body, false)
			switch {
			case err != nil && (ctx.Err() != nil || flow.IsTerminal(err)):
				return nil, err
			case err != nil:
				try++
				quiet.Reset(flow.Backoff(try, p.backoffMin, p.backoffMax, 0.2, nil))
				continue
			case next.terminal():
				return p.outcome(id, next, progress)
			}
			progress.fromLogs(next.Logs)
			progress.output(next.Output)
			try = 0
			quiet.Reset(p.quiet)
		}
	}
}

// alreadyEnded reads the last final webhook stored for the job (a direct
// get): ok when it is about prediction id, which then ended while nobody
// waited (a call re-attaching after a crash), and a PUT must not be sent,
// since it would start the prediction again. A failed read is not an
// outcome: the call goes on and re-attaches.
func (p *cogProvider) alreadyEnded(ctx context.Context, job, id string, progress *progressTracker) (out json.RawMessage, ok bool, err error) {
	hd, found, err := p.hooks.LastFinal(ctx, envelope.WebhookCog, job)
	if err != nil || !found {
		return nil, false, nil
	}
	d, mine := cogDelivery(id, hd)
	if !mine || !d.terminal() {
		return nil, false, nil
	}
	out, err = p.outcome(id, d, progress)
	return out, true, err
}

// cogDelivery decodes a webhook delivery: ok when it is a prediction
// object of prediction id. Deliveries of the job's earlier predictions
// (their webhooks arrive late) and anything else are ignored.
func cogDelivery(id string, d WebhookDelivery) (cogPrediction, bool) {
	pred, err := decodeCogPrediction(d.Body)
	if err != nil || pred.ID != id {
		return cogPrediction{}, false
	}
	return pred, true
}

// outcome classifies a terminal prediction.
func (p *cogProvider) outcome(id string, pred cogPrediction, progress *progressTracker) (json.RawMessage, error) {
	progress.fromLogs(pred.Logs)
	progress.timed(pred.timing(pred.Metrics.PredictTime))
	return predictionOutcome("cog", id, pred.Status, pred.Output, pred.Error, p.maxResponse, progress)
}

// cancelRemote asks the server to cancel prediction id; best effort, on
// its own short deadline (the call's ctx is already done).
func (p *cogProvider) cancelRemote(srv *cogServer, id string) {
	if srv == nil {
		p.mu.Lock()
		srv = p.placed[id]
		p.mu.Unlock()
		if srv == nil {
			return
		}
	}
	defer p.unplace(id)
	ctx, cancel := context.WithTimeout(context.Background(), min(p.reqTimeout, 5*time.Second))
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.base+"/predictions/"+url.PathEscape(id)+"/cancel", nil)
	if err != nil {
		return
	}
	resp, err := p.client.Do(hreq)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
}

// Health asks every server's GET /health-check (READY, BUSY, STARTING,
// SETUP_FAILED, DEFUNCT, UNHEALTHY) and remembers each answer for the
// rotation (usable). It returns nil when one is READY or BUSY (busy
// servers queue work through 409 waits), else an error listing each
// server's status: the processor's /readyz reason.
func (p *cogProvider) Health(ctx context.Context) error {
	var why []string
	ok := false
	for _, srv := range p.servers {
		status, err := p.healthOf(ctx, srv)
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", srv.base, err))
			srv.setStatus("UNREACHABLE", time.Now())
			continue
		}
		srv.setStatus(status, time.Now())
		if status == "READY" || status == "BUSY" {
			ok = true
		} else {
			why = append(why, srv.base+": "+status)
		}
	}
	if ok {
		return nil
	}
	return fmt.Errorf("cog provider: no server ready: %s", strings.Join(why, "; "))
}

func (p *cogProvider) healthOf(ctx context.Context, srv *cogServer) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.reqTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.base+"/health-check", nil)
	if err != nil {
		return "", err
	}
	resp, err := p.client.Do(hreq)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	var h struct {
		Status string `json:"status"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &h) != nil || h.Status == "" {
		return "", fmt.Errorf("%w: health check answered %d: %s", ErrInvalidResponse, resp.StatusCode, snippet(b))
	}
	return h.Status, nil
}

// predictionOutcome classifies a terminal prediction of a Cog-style API
// (Cog, Replicate; service names it in errors): succeeded → its output
// (null when empty), or a terminal ErrResponseTooLarge past maxResponse;
// failed → retryable ErrRemote with the prediction's error; canceled →
// retryable ErrRemote.
func predictionOutcome(service, id, status string, output, errBody json.RawMessage, maxResponse int64, progress *progressTracker) (json.RawMessage, error) {
	switch status {
	case "succeeded":
		out := bytes.TrimSpace(output)
		if len(out) == 0 {
			out = []byte("null")
		}
		if int64(len(out)) > maxResponse {
			return nil, flow.Terminal(fmt.Errorf("%w: %s prediction %s output is %d bytes, limit %d", ErrResponseTooLarge, service, id, len(out), maxResponse))
		}
		progress.report(100)
		return json.RawMessage(out), nil
	case "failed":
		var msg string
		if json.Unmarshal(errBody, &msg) != nil {
			msg = string(errBody)
		}
		return nil, flow.Retryable(fmt.Errorf("%w: %s prediction %s failed: %s", ErrRemote, service, id, snippet([]byte(msg))), 0)
	default:
		return nil, flow.Retryable(fmt.Errorf("%w: %s prediction %s was canceled", ErrRemote, service, id), 0)
	}
}

// progressTracker turns the percentages a model prints (tqdm's "42%|",
// "step 3/10 30%") into non-decreasing progress reports, and the output a
// running prediction already holds into previews (Request.Preview).
type progressTracker struct {
	report  func(int)
	last    int
	preview func(json.RawMessage)
	timing  func(Timing) // timing.go
}

// withPreview makes output pass a running prediction's output to f.
func (t *progressTracker) withPreview(f func(json.RawMessage)) *progressTracker {
	t.preview = f
	return t
}

// output reports the output of a prediction still running, if it has one.
func (t *progressTracker) output(out json.RawMessage) {
	if t.preview == nil || len(out) == 0 || bytes.Equal(out, []byte("null")) {
		return
	}
	t.preview(out)
}

var percentRE = regexp.MustCompile(`(\d{1,3})%`)

func newProgressTracker(f func(int)) *progressTracker {
	t := &progressTracker{last: -1}
	t.report = func(pct int) {
		if f == nil || pct <= t.last || pct < 0 || pct > 100 {
			return
		}
		t.last = pct
		f(pct)
	}
	return t
}

func (t *progressTracker) fromLogs(logs string) {
	if logs == "" {
		return
	}
	m := percentRE.FindAllStringSubmatch(logs, -1)
	if len(m) == 0 {
		return
	}
	if v, err := strconv.Atoi(m[len(m)-1][1]); err == nil {
		t.report(v)
	}
}
