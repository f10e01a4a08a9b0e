// Package replicatefake is an in-process fake of the hosted Replicate HTTP
// API, for tests of the replicate provider and for devstack. It follows
// what Replicate documents (read December 2026):
//
//   - replicate.com/docs/reference/http and sdks.replicate.com
//     (predictions.create, models.predictions.create, predictions.get,
//     predictions.cancel): POST /v1/models/{owner}/{name}/predictions with
//     {"input", "webhook", "webhook_events_filter", "stream"} for official
//     models, POST /v1/predictions with a "version" for any version;
//     `Authorization: Bearer $REPLICATE_API_TOKEN`; GET
//     /v1/predictions/{id}; POST /v1/predictions/{id}/cancel "cancel a
//     prediction that is currently running" (a completed one cannot be
//     canceled and is answered as it is).
//   - The prediction object: id, model, version, input, logs, output,
//     error, status, created_at, started_at, completed_at, data_removed,
//     source, metrics.predict_time (set once terminal: "the amount of CPU
//     or GPU time ... It won't include time waiting for the prediction to
//     start"), urls.get, urls.cancel (and urls.stream when asked). Statuses
//     starting ("a new worker is being started"), processing (predict()
//     runs), succeeded, failed, canceled.
//   - docs/topics/predictions/create-a-prediction (sync mode): `Prefer:
//     wait` holds the create request open up to 60 seconds (`wait=n`, n in
//     1..60); a prediction that has not finished by then is returned as it
//     is and must be polled with predictions.get. The create answers 201.
//   - Output files are HTTPS URLs on replicate.delivery, and "input and
//     output (including any files) are automatically deleted after an
//     hour": the fake serves each output file once and then answers 404,
//     so a consumer that does not copy a file on first sight loses it.
//   - docs/topics/predictions/rate-limits: creates are limited to 600
//     requests per minute, other endpoints to 3000; over the limit the
//     answer is 429 with a body like {"detail":"Request was throttled.
//     Your rate limit resets in ~30s."} (the fake adds Retry-After when a
//     test asks for it).
//   - Errors are problem details (replicate-go apierror.go: type, title,
//     status, detail, instance): 401 without a valid token, 404 for an
//     unknown prediction or model, 422 "Input validation failed" with
//     invalid_fields.
//   - docs/topics/webhooks: webhook and webhook_events_filter (start,
//     output, logs, completed) are echoed on the prediction and delivered,
//     signed with Standard Webhooks headers (see webhooks.go); deliveries
//     can be dropped, duplicated, reordered or forged (WebhookFaults).
//   - docs/streaming: a create with "stream": true gets urls.stream, a
//     server-sent events endpoint (GET /v1/streams/{id}, same bearer token)
//     sending output, error and done events (see stream.go); CutStreams
//     and Fault{Route: RouteStream} break it.
//
// Replicate's create is not idempotent: every accepted POST starts a new
// prediction. Created counts them per job (the model's input key
// Config.Key) so a test can assert how many predictions one job cost.
package replicatefake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// DefaultToken is the API token the fake accepts when Config.Token is "".
const DefaultToken = "r8_fake_token"

// Routes a Fault can target.
const (
	RouteCreate = "create"
	RouteGet    = "get"
	RouteCancel = "cancel"
	RouteFile   = "file"
)

// InputError is what Config.Validate returns for an input the model
// refuses; the server answers 422 like Replicate's input validation.
type InputError struct {
	Field string
	Msg   string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Msg }

// Config configures a Server. Zero values are the defaults.
type Config struct {
	// Token is the bearer token every API request must carry. Default
	// DefaultToken.
	Token string
	// Validate checks an input before a prediction is created; an error is
	// answered 422. Default DefaultValidate.
	Validate func(input map[string]json.RawMessage) error
	// StartDelay is how long a prediction stays "starting" (a cold boot)
	// before the model runs. Default: the input's starting_ms.
	StartDelay func(input map[string]json.RawMessage) time.Duration
	// Predict runs a prediction ("processing") and returns its output (any
	// JSON). It must return when ctx ends (cancel). Default DefaultPredict.
	Predict func(ctx context.Context, r *Run) (json.RawMessage, error)
	// Key names the job a prediction belongs to, for Created. Default: the
	// input's "beamline_job" string when present, else the input as JSON.
	Key func(input map[string]json.RawMessage) string
	// MaxWait caps `Prefer: wait`. Default 60s, as Replicate.
	MaxWait time.Duration
	// WebhookSecret signs webhook deliveries ("whsec_<base64 key>", as
	// GET /v1/webhooks/default/secret answers). Default
	// DefaultWebhookSecret.
	WebhookSecret string
	// Client sends webhooks. Default a plain http.Client.
	Client *http.Client
	// CreatesPerMinute, when positive, throttles creates as Replicate does
	// (600 a minute by default there): over it within a minute window, a
	// create is answered 429 with Retry-After (seconds to the window's end).
	// Default 0: no limit.
	CreatesPerMinute int
}

// Fault makes the next Times requests to Route ("" for any API route)
// answer Status with Body (default a problem-details body) and, when set,
// a Retry-After header. Status 0 with a Body answers 2xx with that body
// (garbage in place of a prediction object). For RouteCreate the fault
// answers before anything is created, as a throttle or a gateway would.
type Fault struct {
	Route      string
	Status     int
	RetryAfter string
	Body       string
	Times      int
}

// Run is one prediction as its model sees it.
type Run struct {
	ID    string
	Input map[string]json.RawMessage
	s     *Server
	p     *prediction
}

// Log appends a line to the prediction's logs (what the model prints).
func (r *Run) Log(line string) {
	r.s.mu.Lock()
	r.p.Logs += line + "\n"
	r.s.webhookLocked(r.p, "logs")
	r.s.mu.Unlock()
	r.s.flush(r.p)
}

// Output sets the output of the prediction while it runs (Replicate shows
// a model's outputs so far while it is processing) and queues an "output"
// webhook.
func (r *Run) Output(out json.RawMessage) {
	r.s.mu.Lock()
	r.p.Output = out
	r.p.streamLocked("output", outputEvent(out))
	r.s.webhookLocked(r.p, "output")
	r.s.mu.Unlock()
	r.s.flush(r.p)
}

// File stores an output file served once by the fake and returns its URL.
func (r *Run) File(name, contentType string, data []byte) string {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	path := "/files/" + r.ID + "/" + name
	r.s.files[path] = &file{contentType: contentType, data: bytes.Clone(data)}
	return r.p.base + path
}

type file struct {
	contentType string
	data        []byte
}

// Server is the fake. It is an http.Handler; Close ends every prediction
// and waits for its goroutines.
type Server struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool // set by Close under mu: no prediction starts after it

	mu      sync.Mutex
	preds   map[string]*prediction
	created map[string]int
	cancels map[string]int
	files   map[string]*file
	served  map[string]int
	faults  []*Fault
	total   int
	polls   int
	seq     int

	window      time.Time // start of the current rate-limit minute
	windowCount int       // creates in it

	hookFaults WebhookFaults
	hookSeq    int
	hookIDs    string // prefix of this server's webhook-ids
	hooksSent  int
	hooksOK    int

	streams    int   // stream requests answered 200
	streamCuts []int // CutStreams, for the next stream requests
}

type prediction struct {
	ID                  string                     `json:"id"`
	Model               string                     `json:"model"`
	Version             string                     `json:"version"`
	Input               map[string]json.RawMessage `json:"input"`
	Logs                string                     `json:"logs"`
	Output              json.RawMessage            `json:"output"`
	Error               *string                    `json:"error"`
	Status              string                     `json:"status"`
	Source              string                     `json:"source"`
	DataRemoved         bool                       `json:"data_removed"`
	CreatedAt           string                     `json:"created_at"`
	StartedAt           *string                    `json:"started_at"`
	CompletedAt         *string                    `json:"completed_at"`
	Metrics             map[string]float64         `json:"metrics"`
	URLs                map[string]string          `json:"urls"`
	Webhook             string                     `json:"webhook,omitempty"`
	WebhookEventsFilter []string                   `json:"webhook_events_filter,omitempty"`

	base    string
	cancel  context.CancelFunc
	done    chan struct{}
	started time.Time
	hookN   int           // webhook deliveries so far (for WebhookFaults.Drop)
	pending []delivery    // webhook deliveries not sent yet
	events  []streamEvent // the stream's events so far (urls.stream)
	changed chan struct{} // closed and replaced when events grow
}

func (p *prediction) terminal() bool {
	return p.Status == "succeeded" || p.Status == "failed" || p.Status == "canceled"
}

// snapshot is the prediction object; the caller holds s.mu.
func (p *prediction) snapshot() []byte {
	b, _ := json.Marshal(p)
	return b
}

// New returns a fake Replicate API.
func New(cfg Config) *Server {
	if cfg.Token == "" {
		cfg.Token = DefaultToken
	}
	if cfg.Validate == nil {
		cfg.Validate = DefaultValidate
	}
	if cfg.StartDelay == nil {
		cfg.StartDelay = DefaultStartDelay
	}
	if cfg.Predict == nil {
		cfg.Predict = DefaultPredict
	}
	if cfg.Key == nil {
		cfg.Key = DefaultKey
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 60 * time.Second
	}
	if cfg.WebhookSecret == "" {
		cfg.WebhookSecret = DefaultWebhookSecret
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, ctx: ctx, cancel: cancel,
		preds: map[string]*prediction{}, created: map[string]int{}, cancels: map[string]int{},
		files: map[string]*file{}, served: map[string]int{},
		// Unique per server, as Replicate's are: ingest de-duplicates
		// deliveries by webhook-id, and two fakes (a test's or a
		// benchmark's) may send through the same ingest.
		hookIDs: "msg_" + rand.Text()[:12] + "_",
	}
}

// Close cancels every running prediction and waits for them to end.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true // every wg.Add happens under mu before this, or never
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Inject adds a fault; faults are used in the order they were added.
func (s *Server) Inject(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	s.mu.Lock()
	s.faults = append(s.faults, &f)
	s.mu.Unlock()
}

// Created is how many predictions were created for the job named key
// (Config.Key).
func (s *Server) Created(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created[key]
}

// CreatedTotal is how many predictions were created in all.
func (s *Server) CreatedTotal() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Cancels is how many cancel requests found prediction id running.
func (s *Server) Cancels(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancels[id]
}

// CancelsTotal is how many cancel requests found their prediction running.
func (s *Server) CancelsTotal() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.cancels {
		n += c
	}
	return n
}

// Status is the status of prediction id ("" when unknown).
func (s *Server) Status(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.preds[id]; p != nil {
		return p.Status
	}
	return ""
}

// Snapshot is the prediction object of id as GET would answer it (nil
// when unknown).
func (s *Server) Snapshot(id string) json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.preds[id]; p != nil {
		return p.snapshot()
	}
	return nil
}

// Polls is how many GET /v1/predictions/{id} requests were answered.
func (s *Server) Polls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls
}

// IDs lists every prediction created, oldest first.
func (s *Server) IDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.preds))
	for id := range s.preds {
		ids = append(ids, id)
	}
	slices.Sort(ids) // fake%08d...: lexical order is creation order
	return ids
}

// Running is how many predictions are starting or processing.
func (s *Server) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.preds {
		if !p.terminal() {
			n++
		}
	}
	return n
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	if strings.HasPrefix(path, "/files/") && r.Method == http.MethodGet {
		if s.fault(w, RouteFile) {
			return
		}
		s.serveFile(w, path)
		return
	}
	if !s.authorized(r) {
		problem(w, http.StatusUnauthorized, "Unauthenticated", "You did not pass a valid authentication token")
		return
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch {
	case r.Method == http.MethodPost && path == "/v1/predictions":
		s.create(w, r, "")
	case r.Method == http.MethodPost && len(parts) == 5 && parts[0] == "v1" && parts[1] == "models" && parts[4] == "predictions":
		s.create(w, r, parts[2]+"/"+parts[3])
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "v1" && parts[1] == "predictions":
		if !s.fault(w, RouteGet) {
			s.get(w, parts[2])
		}
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "v1" && parts[1] == "streams":
		if !s.fault(w, RouteStream) {
			s.serveStream(w, r, parts[2])
		}
	case r.Method == http.MethodPost && len(parts) == 4 && parts[0] == "v1" && parts[1] == "predictions" && parts[3] == "cancel":
		if !s.fault(w, RouteCancel) {
			s.cancelPrediction(w, parts[2])
		}
	default:
		problem(w, http.StatusNotFound, "Not found", "Not found.")
	}
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	for _, scheme := range []string{"Bearer ", "Token "} {
		if tok, ok := strings.CutPrefix(h, scheme); ok && tok == s.cfg.Token {
			return true
		}
	}
	return false
}

// fault answers the request with the first fault for route, if any.
func (s *Server) fault(w http.ResponseWriter, route string) bool {
	s.mu.Lock()
	var f *Fault
	for i, c := range s.faults {
		if c.Route == "" && route != RouteFile || c.Route == route {
			f = c
			if c.Times--; c.Times <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			break
		}
	}
	s.mu.Unlock()
	if f == nil {
		return false
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	status := f.Status
	if status == 0 {
		status = http.StatusOK
		if route == RouteCreate {
			status = http.StatusCreated
		}
	}
	if f.Body != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, f.Body)
		return true
	}
	if status == http.StatusTooManyRequests {
		problem(w, status, "Request was throttled", "Request was throttled. Your rate limit resets in ~30s.")
		return true
	}
	problem(w, status, http.StatusText(status), "injected fault")
	return true
}

// throttled answers 429 when the create is over CreatesPerMinute.
func (s *Server) throttled(w http.ResponseWriter) bool {
	if s.cfg.CreatesPerMinute <= 0 {
		return false
	}
	now := time.Now()
	s.mu.Lock()
	if now.Sub(s.window) >= time.Minute {
		s.window, s.windowCount = now, 0
	}
	s.windowCount++
	over := s.windowCount > s.cfg.CreatesPerMinute
	left := max(int(time.Until(s.window.Add(time.Minute)).Seconds()+0.999), 1)
	s.mu.Unlock()
	if !over {
		return false
	}
	w.Header().Set("Retry-After", strconv.Itoa(left))
	problem(w, http.StatusTooManyRequests, "Request was throttled",
		fmt.Sprintf("Request was throttled. Your rate limit resets in ~%ds.", left))
	return true
}

type createBody struct {
	Version             string                     `json:"version"`
	Input               map[string]json.RawMessage `json:"input"`
	Webhook             string                     `json:"webhook"`
	WebhookEventsFilter []string                   `json:"webhook_events_filter"`
	Stream              bool                       `json:"stream"`
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, model string) {
	if s.fault(w, RouteCreate) || s.throttled(w) {
		return
	}
	var body createBody
	raw, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		problem(w, http.StatusBadRequest, "Bad request", "Invalid JSON body: "+err.Error())
		return
	}
	version := body.Version
	if model == "" {
		if version == "" {
			invalid(w, "version", "version is required")
			return
		}
		if owner, v, ok := strings.Cut(version, ":"); ok { // "owner/name:version"
			model, version = owner, v
		}
	}
	if body.Input == nil {
		invalid(w, "input", "input is required")
		return
	}
	if err := s.cfg.Validate(body.Input); err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			invalid(w, "input."+ie.Field, ie.Msg)
		} else {
			invalid(w, "input", err.Error())
		}
		return
	}

	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	base := scheme + "://" + r.Host
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		problem(w, http.StatusServiceUnavailable, "Service Unavailable", "the fake is closed")
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	s.seq++
	s.total++
	s.created[s.cfg.Key(body.Input)]++
	id := fmt.Sprintf("fake%08d%s", s.seq, strings.Repeat("q", 14))
	p := &prediction{
		ID: id, Model: model, Version: version, Input: body.Input, Status: "starting", Source: "api",
		CreatedAt: time.Now().UTC().Format(time.RFC3339Nano), Metrics: map[string]float64{},
		URLs: map[string]string{
			"get":    base + "/v1/predictions/" + id,
			"cancel": base + "/v1/predictions/" + id + "/cancel",
		},
		Webhook: body.Webhook, WebhookEventsFilter: body.WebhookEventsFilter,
		base: base, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{}),
	}
	if body.Stream {
		p.URLs["stream"] = base + "/v1/streams/" + id
	}
	s.preds[id] = p
	s.webhookLocked(p, "start")
	s.wg.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.wg.Done()
		s.flush(p)
		s.run(ctx, &Run{ID: id, Input: body.Input, s: s, p: p})
		s.flush(p)
	}()

	if wait, ok := preferWait(r.Header.Get("Prefer"), s.cfg.MaxWait); ok {
		t := time.NewTimer(wait)
		select {
		case <-p.done:
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
	}
	s.mu.Lock()
	snap := p.snapshot()
	s.mu.Unlock()
	writeRaw(w, http.StatusCreated, snap)
}

// preferWait reads `Prefer: wait` or `wait=n` (n in 1..60 on Replicate).
func preferWait(h string, maxWait time.Duration) (time.Duration, bool) {
	for _, pref := range strings.Split(h, ",") {
		name, val, hasVal := strings.Cut(strings.TrimSpace(pref), "=")
		if strings.TrimSpace(name) != "wait" {
			continue
		}
		if !hasVal {
			return maxWait, true
		}
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil || n < 1 {
			return 0, false
		}
		return min(time.Duration(n)*time.Second, maxWait), true
	}
	return 0, false
}

// run moves the prediction through starting → processing → its outcome.
func (s *Server) run(ctx context.Context, r *Run) {
	p := r.p
	err := flow.Sleep(ctx, s.cfg.StartDelay(r.Input))
	var out json.RawMessage
	if err == nil {
		s.mu.Lock()
		now := time.Now().UTC()
		p.Status, p.started = "processing", now
		started := now.Format(time.RFC3339Nano)
		p.StartedAt = &started
		s.mu.Unlock()
		out, err = func() (out json.RawMessage, err error) {
			defer func() {
				if v := recover(); v != nil {
					err = fmt.Errorf("prediction panicked: %v", v)
				}
			}()
			return s.cfg.Predict(ctx, r)
		}()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.webhookLocked(p, "completed")
	switch {
	case ctx.Err() != nil:
		p.Status = "canceled"
	case err != nil:
		p.Status = "failed"
		msg := err.Error()
		p.Error = &msg
	default:
		p.Status = "succeeded"
		p.Output = out
		defer s.webhookLocked(p, "output")
	}
	now := time.Now().UTC()
	completed := now.Format(time.RFC3339Nano)
	p.CompletedAt = &completed
	if !p.started.IsZero() {
		p.Metrics["predict_time"] = now.Sub(p.started).Seconds()
	}
	p.endStreamLocked()
	p.cancel()
	close(p.done)
}

func (s *Server) get(w http.ResponseWriter, id string) {
	s.mu.Lock()
	s.polls++
	p := s.preds[id]
	var snap []byte
	if p != nil {
		snap = p.snapshot()
	}
	s.mu.Unlock()
	if p == nil {
		problem(w, http.StatusNotFound, "Not found", "Not found.")
		return
	}
	writeRaw(w, http.StatusOK, snap)
}

func (s *Server) cancelPrediction(w http.ResponseWriter, id string) {
	s.mu.Lock()
	p := s.preds[id]
	running := p != nil && !p.terminal()
	if running {
		s.cancels[id]++
		p.cancel()
	}
	s.mu.Unlock()
	if p == nil {
		problem(w, http.StatusNotFound, "Not found", "Not found.")
		return
	}
	if running {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	s.mu.Lock()
	snap := p.snapshot()
	s.mu.Unlock()
	writeRaw(w, http.StatusOK, snap)
}

// serveFile serves an output file once; later requests find it deleted.
func (s *Server) serveFile(w http.ResponseWriter, path string) {
	s.mu.Lock()
	f := s.files[path]
	delete(s.files, path)
	if f != nil {
		s.served[path]++
	}
	s.mu.Unlock()
	if f == nil {
		problem(w, http.StatusNotFound, "Not found", "Not found.")
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(f.data)
}

// Downloads is how many times the file at url's path was served (0 or 1).
func (s *Server) Downloads(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[path]
}

func problem(w http.ResponseWriter, status int, title, detail string) {
	b, _ := json.Marshal(map[string]any{"title": title, "detail": detail, "status": status})
	writeRaw(w, status, b)
}

func invalid(w http.ResponseWriter, field, msg string) {
	b, _ := json.Marshal(map[string]any{
		"title": "Input validation failed", "status": http.StatusUnprocessableEntity,
		"detail":         "- " + field + ": " + msg,
		"invalid_fields": []map[string]string{{"type": "invalid", "field": field, "description": msg}},
	})
	writeRaw(w, http.StatusUnprocessableEntity, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
