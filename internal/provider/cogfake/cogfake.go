// Package cogfake is an in-process fake of a Cog model server's HTTP API,
// for tests of the cog provider and for devstack. It follows what the
// replicate/cog repository documents and implements (read at commit
// 6110c91, August 2026):
//
//   - replicate/cog/docs/http.md: PUT /predictions/{id} is the idempotent create, with
//     `Prefer: respond-async` answering 202 {"id","status":"starting"} at
//     once, and without it holding the response until the prediction ends
//     (200 with the final prediction object, also when it failed or was
//     canceled); "Polling for prediction status is not currently supported"
//     (there is no GET /predictions/{id}); 409 Conflict "when all prediction
//     slots are in use"; GET /health-check always answers 200 with a status
//     of STARTING, READY, BUSY, SETUP_FAILED, DEFUNCT or UNHEALTHY;
//     POST /predictions/{id}/cancel answers 200 when the prediction exists,
//     404 otherwise; webhooks carry the prediction object for the events
//     start, output, logs and completed, filtered by webhook_events_filter.
//   - crates/coglet/src/transport/http/routes.rs (the Rust server that
//     replaced python/cog/server/http.py in cog 0.17):
//     create_prediction_idempotent answers a PUT whose id is already in
//     flight with 202 and the prediction's current state (for a JSON
//     request, with or without Prefer), before any capacity check, so a
//     repeated PUT never starts a second prediction while the first runs;
//     a body id different from the path id is 422; create_prediction_with_id
//     validates the input (422 {"detail":[{"loc","msg","type"}]}, unknown
//     input keys silently dropped), answers 503 {"error","status":"failed"}
//     when setup has not finished and 409 {"error":"At capacity - all
//     prediction slots busy","status":"failed"} when every slot is taken; a
//     synchronous request whose client disconnects cancels its prediction.
//   - crates/coglet/src/service.rs: remove_prediction drops a prediction
//     from the in-flight map as soon as it ends, so a PUT of the same id
//     after that starts a NEW prediction (the server keeps no history);
//     get_prediction_response is the in-flight state (id, status, logs,
//     output so far, error, metrics, input).
//   - crates/coglet/src/prediction.rs: statuses starting, processing,
//     succeeded, failed, canceled; metrics.predict_time is set once the
//     prediction is terminal.
//   - crates/coglet/src/webhook.rs: non-terminal webhooks are fire and
//     forget; the completed webhook is retried on 429, 500, 502, 503, 504.
//   - python/cog/server/http.py before 4bc01628 (cog ≤ 0.16): same
//     idempotency (202 with the running task's state), 409 body
//     {"detail":"Already running a prediction"}.
//
// What a test can observe: Started counts the predictions started per id
// (so "exactly one prediction per job" is an assertion), Cancels the cancel
// requests that found their prediction, and the Model decides what each
// prediction does from its input.
package cogfake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Health statuses of GET /health-check.
const (
	StatusStarting    = "STARTING"
	StatusReady       = "READY"
	StatusBusy        = "BUSY"
	StatusSetupFailed = "SETUP_FAILED"
	StatusDefunct     = "DEFUNCT"
)

// InputError is what Config.Validate returns for an input the model refuses;
// the server answers 422 like Cog's input validation.
type InputError struct {
	Field string
	Msg   string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Msg }

// FailedError makes a prediction end "failed" with its message (a model
// that raised). Any other error from Predict does too.
type FailedError struct{ Msg string }

func (e *FailedError) Error() string { return e.Msg }

// Run is one prediction as its model sees it.
type Run struct {
	ID      string
	Input   map[string]json.RawMessage
	Context map[string]string
	s       *Server
	p       *prediction
}

// Output sets the output of the prediction while it runs (a model that
// yields files: coglet reports the outputs so far in the prediction's
// state) and sends an "output" webhook.
func (r *Run) Output(out json.RawMessage) {
	r.s.mu.Lock()
	r.p.Output = out
	snap := r.p.snapshot()
	r.s.mu.Unlock()
	r.s.webhook(r.p, "output", snap)
}

// Log appends a line to the prediction's logs (what the model prints) and
// sends a "logs" webhook.
func (r *Run) Log(line string) {
	r.s.mu.Lock()
	r.p.logs += line + "\n"
	snap := r.p.snapshot()
	r.s.mu.Unlock()
	r.s.webhook(r.p, "logs", snap)
}

// Config configures a Server. Zero values are the defaults.
type Config struct {
	// Slots is the number of predictions run at once (cog.yaml
	// concurrency.max). Default 1.
	Slots int
	// Validate checks an input before a prediction starts; an *InputError
	// (or any error) is answered 422. Default DefaultValidate.
	Validate func(input map[string]json.RawMessage, context map[string]string) error
	// Predict runs a prediction and returns its output (any JSON value).
	// It must return when ctx ends (cancel). Default DefaultPredict.
	Predict func(ctx context.Context, r *Run) (json.RawMessage, error)
	// Client sends webhooks. Default a plain http.Client.
	Client *http.Client
}

// Server is the fake. It is an http.Handler; Close ends every prediction
// and waits for its goroutines.
type Server struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool // set by Close under mu: no prediction starts after it

	mu       sync.Mutex
	health   string // forced status; "" means READY or BUSY from the slots
	inflight map[string]*prediction
	started  map[string]int
	cancels  map[string]int
	total    int
	conflict int
	hooked   int
}

type prediction struct {
	ID          string                     `json:"id"`
	Status      string                     `json:"status"`
	Input       map[string]json.RawMessage `json:"input,omitempty"`
	Output      json.RawMessage            `json:"output,omitempty"`
	Error       string                     `json:"error,omitempty"`
	Logs        string                     `json:"logs"`
	Metrics     map[string]float64         `json:"metrics"`
	CreatedAt   string                     `json:"created_at,omitempty"`
	StartedAt   string                     `json:"started_at,omitempty"`
	CompletedAt string                     `json:"completed_at,omitempty"`

	logs    string
	cancel  context.CancelFunc
	done    chan struct{}
	webhook string
	events  map[string]bool
	began   time.Time
}

// snapshot is the prediction object; the caller holds s.mu.
func (p *prediction) snapshot() []byte {
	p.Logs = p.logs
	if p.Metrics == nil {
		p.Metrics = map[string]float64{}
	}
	b, _ := json.Marshal(p)
	return b
}

// New returns a fake Cog server, READY.
func New(cfg Config) *Server {
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.Validate == nil {
		cfg.Validate = DefaultValidate
	}
	if cfg.Predict == nil {
		cfg.Predict = DefaultPredict
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, ctx: ctx, cancel: cancel,
		inflight: map[string]*prediction{},
		started:  map[string]int{},
		cancels:  map[string]int{},
	}
}

// Close cancels every running prediction and waits for them (and their
// webhooks) to end.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true // every wg.Add happens under mu before this, or never
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// SetHealth forces the health status (STARTING, SETUP_FAILED, DEFUNCT):
// predictions are then refused with 503. "" or READY returns to normal.
func (s *Server) SetHealth(status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status == StatusReady {
		status = ""
	}
	s.health = status
}

// Started is how many predictions were started with id.
func (s *Server) Started(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started[id]
}

// StartedTotal is how many predictions were started in all.
func (s *Server) StartedTotal() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// CompletedWebhooks is how many completed webhooks were answered 2xx.
func (s *Server) CompletedWebhooks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hooked
}

// Conflicts is how many PUTs were refused with 409 (all slots busy).
func (s *Server) Conflicts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conflict
}

// Cancels is how many cancel requests found prediction id in flight.
func (s *Server) Cancels(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancels[id]
}

// InFlight is the number of predictions running now.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight)
}

// InFlightIDs lists the ids of the predictions running now.
func (s *Server) InFlightIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.inflight))
	for id := range s.inflight {
		ids = append(ids, id)
	}
	return ids
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == "/health-check" && r.Method == http.MethodGet:
		s.healthCheck(w)
	case strings.HasPrefix(path, "/predictions/") && strings.HasSuffix(path, "/cancel") && r.Method == http.MethodPost:
		s.cancelPrediction(w, strings.TrimSuffix(strings.TrimPrefix(path, "/predictions/"), "/cancel"))
	case strings.HasPrefix(path, "/predictions/") && r.Method == http.MethodPut:
		id := strings.TrimPrefix(path, "/predictions/")
		if id == "" || strings.Contains(id, "/") {
			writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
			return
		}
		s.put(w, r, id)
	case strings.HasPrefix(path, "/predictions/") && r.Method == http.MethodGet:
		// Not in Cog's API: "Polling for prediction status is not
		// currently supported" (replicate/cog/docs/http.md).
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"detail": "Method Not Allowed"})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
	}
}

func (s *Server) healthCheck(w http.ResponseWriter) {
	s.mu.Lock()
	status := s.health
	if status == "" {
		status = StatusReady
		if len(s.inflight) >= s.cfg.Slots {
			status = StatusBusy
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"status":  status,
		"version": map[string]string{"coglet": "fake"},
	})
}

func (s *Server) cancelPrediction(w http.ResponseWriter, id string) {
	s.mu.Lock()
	p := s.inflight[id]
	if p != nil {
		s.cancels[id]++
		p.cancel()
	}
	s.mu.Unlock()
	if p == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

type putBody struct {
	ID                  *string                    `json:"id"`
	Input               map[string]json.RawMessage `json:"input"`
	Context             map[string]string          `json:"context"`
	Webhook             string                     `json:"webhook"`
	WebhookEventsFilter []string                   `json:"webhook_events_filter"`
}

func unprocessable(w http.ResponseWriter, loc []string, msg string) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"detail": []map[string]any{{"loc": loc, "msg": msg, "type": "value_error"}},
	})
}

func (s *Server) put(w http.ResponseWriter, r *http.Request, id string) {
	var body putBody
	raw, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &body); err != nil {
			unprocessable(w, []string{"body"}, "invalid JSON body: "+err.Error())
			return
		}
	}
	if body.ID != nil && *body.ID != id {
		unprocessable(w, []string{"body", "id"}, "prediction ID must match the ID supplied in the URL")
		return
	}
	if body.Input == nil {
		body.Input = map[string]json.RawMessage{}
	}
	async := r.Header.Get("Prefer") == "respond-async"

	s.mu.Lock()
	if p := s.inflight[id]; p != nil {
		// routes.rs create_prediction_idempotent: the in-flight state, 202.
		snap := p.snapshot()
		s.mu.Unlock()
		writeRaw(w, http.StatusAccepted, snap)
		return
	}
	s.mu.Unlock()

	if err := s.cfg.Validate(body.Input, body.Context); err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			unprocessable(w, []string{"body", "input", ie.Field}, ie.Msg)
		} else {
			unprocessable(w, []string{"body", "input"}, err.Error())
		}
		return
	}

	s.mu.Lock()
	if p := s.inflight[id]; p != nil { // a concurrent PUT of the same id won
		snap := p.snapshot()
		s.mu.Unlock()
		writeRaw(w, http.StatusAccepted, snap)
		return
	}
	if s.health != "" || s.closed {
		s.mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "Predictor not ready", "status": "failed"})
		return
	}
	if len(s.inflight) >= s.cfg.Slots {
		s.conflict++
		s.mu.Unlock()
		writeJSON(w, http.StatusConflict, map[string]string{"error": "At capacity - all prediction slots busy", "status": "failed"})
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	now := time.Now().UTC()
	p := &prediction{
		ID: id, Status: "starting", Input: body.Input,
		CreatedAt: now.Format(time.RFC3339Nano),
		cancel:    cancel, done: make(chan struct{}),
		webhook: body.Webhook, began: now,
	}
	if body.Webhook != "" {
		p.events = map[string]bool{}
		filter := body.WebhookEventsFilter
		if len(filter) == 0 {
			filter = []string{"start", "output", "logs", "completed"}
		}
		for _, e := range filter {
			p.events[e] = true
		}
	}
	s.inflight[id] = p
	s.started[id]++
	s.total++
	startSnap := p.snapshot()
	s.wg.Add(1)
	s.mu.Unlock()

	run := &Run{ID: id, Input: body.Input, Context: body.Context, s: s, p: p}
	go func() {
		defer s.wg.Done()
		s.webhook(p, "start", startSnap)
		s.run(ctx, run)
	}()

	if async {
		writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "status": "starting"})
		return
	}
	// Synchronous: wait; a client that goes away cancels the prediction
	// (coglet's SyncPredictionGuard).
	select {
	case <-p.done:
	case <-r.Context().Done():
		cancel()
		<-p.done
		return
	}
	s.mu.Lock()
	snap := p.snapshot()
	s.mu.Unlock()
	writeRaw(w, http.StatusOK, snap)
}

// run runs the model and records the outcome.
func (s *Server) run(ctx context.Context, r *Run) {
	p := r.p
	s.mu.Lock()
	p.Status = "processing"
	p.StartedAt = time.Now().UTC().Format(time.RFC3339Nano)
	s.mu.Unlock()

	out, err := func() (out json.RawMessage, err error) {
		defer func() {
			if v := recover(); v != nil {
				err = fmt.Errorf("prediction panicked: %v", v)
			}
		}()
		return s.cfg.Predict(ctx, r)
	}()

	s.mu.Lock()
	switch {
	case ctx.Err() != nil:
		p.Status = "canceled"
	case err != nil:
		p.Status = "failed"
		p.Error = err.Error()
	default:
		p.Status = "succeeded"
		p.Output = out
	}
	now := time.Now().UTC()
	p.CompletedAt = now.Format(time.RFC3339Nano)
	p.Metrics = map[string]float64{"predict_time": now.Sub(p.began).Seconds()}
	snap := p.snapshot()
	// service.rs remove_prediction: gone from the in-flight map once it
	// ends; a later PUT of this id starts a new prediction.
	delete(s.inflight, p.ID)
	p.cancel()
	close(p.done)
	s.mu.Unlock()
	if out != nil && err == nil {
		s.webhook(p, "output", snap)
	}
	s.webhook(p, "completed", snap)
}

// webhook POSTs the prediction object to its webhook URL when the event
// passes its filter. Only "completed" is retried (webhook.rs).
func (s *Server) webhook(p *prediction, event string, body []byte) {
	if p.webhook == "" || !p.events[event] {
		return
	}
	tries := 1
	if event == "completed" {
		tries = 5
	}
	for i := 0; i < tries; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.webhook, bytes.NewReader(body))
		if err != nil {
			cancel()
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := s.cfg.Client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		cancel()
		if err == nil {
			switch resp.StatusCode {
			case 429, 500, 502, 503, 504:
			default:
				if event == "completed" && resp.StatusCode/100 == 2 {
					s.mu.Lock()
					s.hooked++
					s.mu.Unlock()
				}
				return
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(time.Duration(i+1) * 20 * time.Millisecond):
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
