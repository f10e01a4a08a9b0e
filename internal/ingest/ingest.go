// Package ingest is Beamline's HTTP API for submitting and reading jobs:
//
//	POST   /v1/jobs       submit; 202 only after JetStream acknowledged the job
//	POST   /v1/jobs/batch submit up to 1,000 jobs; an answer per item
//	GET    /v1/jobs       the caller's jobs, newest first, cursor-paginated
//	POST   /v1/jobs/{id}/rerun  a failed, dead, cancelled or expired job again
//	GET    /v1/admin/dlq          dead jobs (admin)
//	POST/GET /v1/schedules, DELETE /v1/schedules/{name}  repeating jobs
//	POST   /v1/admin/dlq/redrive  rerun matching dead jobs (admin)
//	GET    /v1/admin/streams      each stream's messages, bytes, retention (admin)
//	GET    /v1/jobs/{id}  the job's status snapshot
//	DELETE /v1/jobs/{id}  cancel a job that has not finished
//	GET    /v1/jobs/{id}/outputs/{name}       a stored output of the job
//	GET    /v1/jobs/{id}/outputs/{name}/link  a short-lived signed URL of it
//	POST   /v1/webhooks/replicate, /v1/webhooks/cog/{job}/{n}  provider webhooks (webhooks.go)
//
// beside /metrics, /healthz and /readyz, with CORS for the origins of
// Config.CORSOrigins. Callers authenticate with an HS256
// bearer token whose sub is the user. api/openapi.yaml documents the API;
// the package tests check every live answer against it.
package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/ops"
	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/telemetry"
)

// Route labels of beamline_ingest_requests_total.
const (
	routeSubmit = "submit"
	routeBatch  = "batch"
	routeList   = "list"
	routeRerun  = "rerun"
	routeDLQ    = "dlq"
	routeSched  = "schedules"
	routeGet    = "get"
	routeCancel = "cancel"
	routeOther  = "other"
)

// Service is the ingest HTTP API.
type Service struct {
	cfg       Config
	nc        *nats.Conn
	js        jetstream.JetStream
	store     *jobstore.Store
	verifier  *auth.Verifier
	tokens    *tokenCache // tokens verified recently
	kinds     map[string]bool
	log       *slog.Logger
	metrics   *metrics
	gatherer  prometheus.Gatherer
	slots     chan struct{} // one per submission in flight
	hookSlots chan struct{} // one per webhook in flight
	tracer    trace.Tracer
	handler   http.Handler
	outputs   outputStore     // the outputs bucket, bound on first use
	signer    *outputs.Signer // signed output URLs
	// replicateKey is the HMAC key of Replicate's webhook signatures; nil
	// when they are not configured.
	replicateKey []byte
}

// New builds the service. It opens the job_status KV bucket, so the streams
// must have been applied (jsm.ApplyStreams). Metrics are registered on reg;
// when reg is also a prometheus.Gatherer (a *prometheus.Registry is) /metrics
// serves it, and a nil reg means a fresh private registry.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil {
		return nil, fmt.Errorf("%w: a NATS connection and its JetStream context are required", ErrInvalidConfig)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	verifier, err := auth.NewVerifier(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.RequestTimeout)
	defer cancel()
	kv, err := jsm.JobStatus(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("ingest: register metrics: %w", err)
	}
	s := &Service{
		cfg:       cfg,
		nc:        nc,
		js:        js,
		verifier:  verifier,
		tokens:    newTokenCache(tokenCacheSize, tokenCacheTTL),
		kinds:     make(map[string]bool, len(cfg.Kinds)),
		log:       log,
		metrics:   m,
		slots:     make(chan struct{}, cfg.MaxInFlight),
		hookSlots: make(chan struct{}, cfg.WebhookMaxInFlight),
		outputs:   outputStore{cacheBytes: cfg.OutputsCacheBytes},
		tracer:    telemetry.Tracer(cfg.TracerProvider),
		signer:    outputs.NewSigner(cfg.Secret),
	}
	if len(cfg.OutputsKey) > 0 {
		if s.signer, err = outputs.NewSignerKey(cfg.OutputsKey); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	s.store = jobstore.New(js, kv, jobstore.Config{Source: cfg.Source, Traceparent: telemetry.Traceparent})
	if cfg.ReplicateWebhookSecret != "" {
		if s.replicateKey, err = ParseWebhookSecret(cfg.ReplicateWebhookSecret); err != nil {
			return nil, fmt.Errorf("%w: ReplicateWebhookSecret: %w", ErrInvalidConfig, err)
		}
	}
	if s.replicateKey != nil || cfg.WebhookKey != nil {
		wctx, wcancel := context.WithTimeout(context.Background(), jsm.SetupTimeout)
		err := jsm.ApplyWebhooks(wctx, js)
		wcancel()
		if err != nil {
			return nil, fmt.Errorf("ingest: %w", err)
		}
	}
	for _, k := range cfg.Kinds {
		s.kinds[k] = true
	}
	if g, ok := reg.(prometheus.Gatherer); ok {
		s.gatherer = g
	} else {
		s.gatherer = prometheus.Gatherers{}
	}
	s.handler = cors(cfg.CORSOrigins, s.routes())
	return s, nil
}

// Handler is the whole HTTP surface: the API, /metrics, /healthz, /readyz.
func (s *Service) Handler() http.Handler { return s.handler }

// Run serves until ctx is done, then shuts down gracefully within
// Config.Grace. It returns nil after a clean shutdown.
func (s *Service) Run(ctx context.Context) error {
	ln, err := ops.Listen(s.cfg.Listener, s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("ingest: listen %s: %w", s.cfg.Addr, err)
	}
	srv := ops.NewServer(s.handler)
	srv.WriteTimeout = s.cfg.RequestTimeout*3 + 30*time.Second
	srv.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	s.log.Info("ingest listening", "addr", ln.Addr().String(), "kinds", s.cfg.Kinds)
	// Schedule firings become jobs (schedules.go) while ingest serves.
	cronCtx, stopCron := context.WithCancel(ctx)
	cronDone := make(chan struct{})
	go func() {
		defer close(cronDone)
		if err := s.runCron(cronCtx); err != nil {
			s.log.Error("schedule firings are not consumed: repeating schedules create no jobs", "err", err)
		}
	}()
	defer func() { stopCron(); <-cronDone }()
	err = ops.Serve(ctx, srv, ln, s.cfg.Grace)
	if err != nil {
		return fmt.Errorf("ingest: serve: %w", err)
	}
	s.log.Info("ingest stopped")
	return nil
}

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	m := s.metrics
	mux.Handle("POST /v1/jobs", m.instrument(routeSubmit, s.traced(routeSubmit, http.HandlerFunc(s.submit))))
	mux.Handle("GET /v1/jobs", m.instrument(routeList, s.traced(routeList, http.HandlerFunc(s.list))))
	mux.Handle("POST /v1/jobs/batch", m.instrument(routeBatch, s.traced(routeBatch, http.HandlerFunc(s.batch))))
	mux.Handle("POST /v1/schedules", m.instrument(routeSched, s.traced(routeSched, http.HandlerFunc(s.createSchedule))))
	mux.Handle("GET /v1/schedules", m.instrument(routeSched, s.traced(routeSched, http.HandlerFunc(s.listSchedules))))
	mux.Handle("DELETE /v1/schedules/{name}", m.instrument(routeSched, s.traced(routeSched, http.HandlerFunc(s.deleteSchedule))))
	mux.Handle("/v1/schedules", m.instrument(routeOther, methodNotAllowed("GET, HEAD, POST")))
	mux.Handle("/v1/schedules/{name}", m.instrument(routeOther, methodNotAllowed("DELETE")))
	mux.Handle("GET /v1/admin/streams", m.instrument(routeDLQ, s.traced(routeDLQ, http.HandlerFunc(s.adminStreams))))
	mux.Handle("GET /v1/admin/dlq", m.instrument(routeDLQ, s.traced(routeDLQ, http.HandlerFunc(s.dlq))))
	mux.Handle("POST /v1/admin/dlq/redrive", m.instrument(routeDLQ, s.traced(routeDLQ, http.HandlerFunc(s.redrive))))
	mux.Handle("/v1/admin/dlq", m.instrument(routeOther, methodNotAllowed("GET, HEAD")))
	mux.Handle("/v1/admin/dlq/redrive", m.instrument(routeOther, methodNotAllowed("POST")))
	mux.Handle("POST /v1/jobs/{id}/rerun", m.instrument(routeRerun, s.traced(routeRerun, http.HandlerFunc(s.rerun))))
	mux.Handle("/v1/jobs/{id}/rerun", m.instrument(routeOther, methodNotAllowed("POST")))
	mux.Handle("GET /v1/jobs/{id}", m.instrument(routeGet, s.traced(routeGet, http.HandlerFunc(s.get))))
	mux.Handle("DELETE /v1/jobs/{id}", m.instrument(routeCancel, s.traced(routeCancel, http.HandlerFunc(s.cancel))))
	mux.Handle("GET /v1/jobs/{id}/outputs/{name}", m.instrument(routeOutput, s.traced(routeOutput, http.HandlerFunc(s.output))))
	mux.Handle("GET /v1/jobs/{id}/outputs/{name}/link", m.instrument(routeLink, s.traced(routeLink, http.HandlerFunc(s.outputLink))))
	mux.Handle("POST /v1/jobs/{id}/share", m.instrument(routeShare, s.traced(routeShare, http.HandlerFunc(s.share))))
	mux.Handle("/v1/jobs/{id}/share", m.instrument(routeOther, methodNotAllowed("POST")))
	mux.Handle("/v1/jobs/{id}/outputs/{name}", m.instrument(routeOther, methodNotAllowed("GET, HEAD")))
	mux.Handle("/v1/jobs/{id}/outputs/{name}/link", m.instrument(routeOther, methodNotAllowed("GET, HEAD")))
	// Webhooks authenticate by signature or URL token, not by bearer token.
	mux.Handle("POST /v1/webhooks/replicate", m.instrument(routeWebhookReplicate, s.traced(routeWebhookReplicate, http.HandlerFunc(s.replicateWebhook))))
	mux.Handle("POST /v1/webhooks/cog/{job}/{n}", m.instrument(routeWebhookCog, s.traced(routeWebhookCog, http.HandlerFunc(s.cogWebhook))))
	mux.Handle("/v1/webhooks/replicate", m.instrument(routeOther, methodNotAllowed("POST")))
	mux.Handle("/v1/webhooks/cog/{job}/{n}", m.instrument(routeOther, methodNotAllowed("POST")))
	// The mux's own 404 and 405 answers are plain text; these keep every
	// error JSON.
	mux.Handle("/v1/jobs", m.instrument(routeOther, methodNotAllowed("GET, HEAD, POST")))
	mux.Handle("/v1/jobs/{id}", m.instrument(routeOther, methodNotAllowed("GET, HEAD, DELETE")))
	mux.Handle("/", m.instrument(routeOther, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no such route"))
	})))
	ops.Register(mux, s.gatherer, ops.NATSReady(s.nc, s.js))
	return mux
}

func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed here (allowed: "+allow+")"))
	})
}
