package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/ops"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
	"github.com/beamline/beamline/streams"
)

// Processor runs jobs. Create it with New, start it with Run.
type Processor struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
	m   *metrics
	mux *http.ServeMux

	store      *jobstore.Store
	handles    jetstream.KeyValue // job_handles; nil when no provider resumes (handles.go)
	deliveries *deliveries        // held messages: heartbeats, cancel by job id
	fair       *fairness
	ready      readyQueues
	rejoins    *rejoinQueue              // runners back from a detached wait (inflight.go)
	runners    sync.WaitGroup            // every runner goroutine; the drain waits for them
	inflight   map[string]*inflightLimit // by provider name: Config.ProviderInflight
	health     map[string]*healthState   // by provider name, of HealthCheckers (health.go)

	kindProviders map[string]provider.Provider
	kindBreakers  map[string]*flow.Breaker
	breakers      map[string]*flow.Breaker // by provider name
	pullers       []*puller

	consMu    sync.Mutex
	consumers map[string]jetstream.Consumer

	// stopCtx ends when the pool drains (stopWaiting): waiting for a
	// breaker's admission stops. jobBase ends when the grace period is over
	// (cancelJobs): running jobs are cancelled.
	stopCtx, jobBase        context.Context
	stopWaiting, cancelJobs context.CancelFunc

	// cancelSubject is envelope.CancelFilter; tests break it to make a supervised
	// child fail.
	cancelSubject string

	// hooks are for tests only; set before Run.
	hooks testHooks
}

// testHooks let tests act at fixed points of a run (inject a panic, cancel
// at a precise moment). All nil outside tests.
type testHooks struct {
	// afterLoad runs after the job's snapshot was read (or claimed),
	// before anything else of the run.
	afterLoad func(d *delivery)
	// beforeCall runs after the claim or the started write, before the
	// provider call.
	beforeCall func(d *delivery)
	// progressStored runs after each progress write, with its outcome.
	progressStored func(d *delivery, pct int, err error)
	// beforePick runs in a worker before each pick, holding nothing.
	beforePick func()
	// heartbeatsStarted runs when the heartbeats child starts.
	heartbeatsStarted func()
}

// New validates cfg and builds a Processor. Metrics are registered on
// registerer. Nothing touches NATS before Run.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, registerer prometheus.Registerer) (*Processor, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil || log == nil || registerer == nil {
		return nil, fmt.Errorf("%w: nats connection, jetstream, logger and registerer are required", ErrInvalidConfig)
	}
	m, err := newMetrics(registerer)
	if err != nil {
		return nil, fmt.Errorf("processor: metrics: %w", err)
	}
	// Every run makes a logger of its job (worker.go) and most never log:
	// their attributes are formatted only if they do.
	log = slog.New(telemetry.DeferAttrs(log.Handler()))
	p := &Processor{
		cfg: c, nc: nc, js: js, log: log, m: m,
		deliveries:    newDeliveries(log),
		fair:          newFairness(c.MaxPerUser, c.WaitingRoom),
		kindProviders: map[string]provider.Provider{},
		kindBreakers:  map[string]*flow.Breaker{},
		breakers:      map[string]*flow.Breaker{},
		consumers:     map[string]jetstream.Consumer{},
		cancelSubject: envelope.CancelFilter,
		rejoins:       newRejoinQueue(),
		inflight:      map[string]*inflightLimit{},
	}
	for _, k := range c.Kinds {
		name := c.providerName(k)
		prov := c.Providers[name]
		br := p.breakers[name]
		if br == nil {
			bc := c.Breaker
			bc.Name = name
			bc.OnStateChange = func(n string, from, to flow.BreakerState) {
				m.breakerState.WithLabelValues(n).Set(breakerValue(to))
				log.Warn("circuit breaker changed state", "provider", n, "from", from.String(), "to", to.String())
			}
			br = flow.NewBreaker(bc)
			p.breakers[name] = br
			m.breakerState.WithLabelValues(name).Set(0)
		}
		p.kindProviders[k.Name] = prov
		p.kindBreakers[k.Name] = br
		if p.inflight[prov.Name()] == nil {
			p.inflight[prov.Name()] = newInflightLimit(c.ProviderInflight)
		}
	}
	for i, prio := range envelope.Priorities {
		p.ready[i] = make(chan *delivery, c.Prefetch*len(c.Kinds))
		for _, k := range c.Kinds {
			p.pullers = append(p.pullers, &puller{
				p: p, prio: prio, kind: k.Name,
				breaker: p.kindBreakers[k.Name],
				credits: newCredits(c.Prefetch),
				queue:   p.ready[prioIndex(prio)],
				log:     log,
			})
		}
	}
	if c.Webhooks != nil {
		if err := c.Webhooks.bind(js, log, registerer); err != nil {
			return nil, fmt.Errorf("processor: webhooks: %w", err)
		}
	}
	p.setupHealth()
	p.mux = http.NewServeMux()
	g, ok := registerer.(prometheus.Gatherer)
	if !ok {
		g = prometheus.NewRegistry()
	}
	natsReady := ops.NATSReady(nc, js)
	ops.Register(p.mux, g, func(ctx context.Context) error {
		if err := natsReady(ctx); err != nil {
			return err
		}
		return p.providersReady() // health.go
	})
	return p, nil
}

// Handler serves /metrics, /healthz and /readyz.
func (p *Processor) Handler() http.Handler { return p.mux }

// Run processes jobs until ctx is done, then shuts down gracefully: it stops
// pulling, Naks (without delay) what is pulled but not running — including
// the waiting room — so another processor takes it at once, lets running jobs
// finish within Grace, cancels and Naks the rest, and returns nil. Every
// long-running part is a child of the processor's supervision tree
// (pool.go). Run returns an error when the setup fails or when that
// supervisor gives up.
func (p *Processor) Run(ctx context.Context) error {
	if err := p.setup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before JetStream was ready: nothing to hand back
		}
		return err
	}
	ln, err := ops.Listen(p.cfg.Listener, p.cfg.Addr)
	if err != nil {
		return fmt.Errorf("processor: listen: %w", err)
	}

	stopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	jobBase, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	p.stopCtx, p.jobBase = stopCtx, jobBase
	p.stopWaiting, p.cancelJobs = stop, cancelJobs

	sup, err := flow.NewSupervisor(flow.SupervisorConfig{
		Name:     "processor",
		Strategy: flow.OneForOne,
		OnEvent:  p.onSupervisorEvent,
	}, p.children(ln)...)
	if err != nil {
		_ = ln.Close()
		return err
	}
	p.log.Info("processor running", "addr", ln.Addr().String(), "kinds", len(p.cfg.Kinds),
		"concurrency", p.cfg.Concurrency, "max_per_user", p.cfg.MaxPerUser,
		"max_ack_pending", maxAckPending(p.cfg))
	// Say at once what a stop waits for: the pool then drains quietly for
	// up to Grace.
	logged := make(chan struct{})
	stopLog := context.AfterFunc(ctx, func() {
		defer close(logged)
		n := p.deliveries.runningCount()
		p.log.Info(fmt.Sprintf("stopping: waiting up to %v for %d running job(s) to finish; "+
			"a second interrupt stops at once and they are redelivered later", p.cfg.Grace, n),
			"running", n, "grace", p.cfg.Grace)
	})
	defer func() {
		if !stopLog() {
			<-logged
		}
	}()
	// Run returns once ctx is done and every child stopped (the pool has
	// drained by then, pool.go), or when the supervisor gives up.
	if err := sup.Run(ctx); err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	return nil
}

// setupAttemptTimeout bounds one attempt of setup.
const setupAttemptTimeout = 10 * time.Second

// setup opens the job_status KV and applies every consumer. A processor may
// start before JetStream is ready — the streams not created yet, or, on a
// fresh cluster, their leaders not elected ("jsm: not applied: ... context
// deadline exceeded") — so a failed attempt is logged and retried with
// backoff, each attempt bounded by setupAttemptTimeout, until ctx ends. Only
// a definition the server refuses (jsm.ErrIncompatible) or that cannot be
// read (jsm.ErrDefinition) fails at once: retrying cannot fix it.
func (p *Processor) setup(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, setupAttemptTimeout)
		err := p.trySetup(actx)
		cancel()
		switch {
		case err == nil:
			if attempt > 1 {
				p.log.Info("JetStream ready", "attempts", attempt)
			}
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, jsm.ErrIncompatible) || errors.Is(err, jsm.ErrDefinition):
			return err
		}
		wait := flow.Backoff(attempt, 100*time.Millisecond, 5*time.Second, 0.2, nil)
		p.log.Warn("JetStream not ready; retrying setup", "attempt", attempt, "retry_in", wait, "err", err)
		if flow.Sleep(ctx, wait) != nil {
			return ctx.Err()
		}
	}
}

func (p *Processor) trySetup(ctx context.Context) error {
	kv, err := jsm.JobStatus(ctx, p.js)
	if err != nil {
		return err
	}
	for _, u := range p.pullers {
		if _, err := jsm.ApplyConsumer(ctx, p.js, u.prio, u.kind, p.consumerConfig); err != nil {
			return err
		}
	}
	if err := p.setupHandles(ctx); err != nil {
		return err
	}
	if p.cfg.Webhooks != nil {
		if err := p.cfg.Webhooks.setup(ctx); err != nil {
			return err
		}
	}
	p.store = jobstore.New(p.js, kv, jobstore.Config{Source: p.cfg.Source, Traceparent: traceparentOf})
	return nil
}

func (p *Processor) children(ln net.Listener) []flow.ChildSpec {
	out := []flow.ChildSpec{
		{Name: "heartbeats", Run: p.runHeartbeats, Restart: flow.Permanent},
		{Name: "workers", Run: p.runWorkers, Restart: flow.Permanent, Shutdown: p.poolShutdown()},
	}
	for _, u := range p.pullers {
		out = append(out, flow.ChildSpec{Name: "pull:" + u.name(), Run: u.run, Restart: flow.Permanent,
			Shutdown: p.cfg.PollWait + childShutdown})
	}
	out = append(out,
		flow.ChildSpec{Name: "cancel", Run: p.runCancels, Restart: flow.Permanent, Shutdown: childShutdown},
		flow.ChildSpec{Name: "health", Run: p.runHealth, Restart: flow.Permanent, Shutdown: childShutdown},
		flow.ChildSpec{Name: "ops", Run: p.opsServer(ln), Restart: flow.Permanent, Shutdown: childShutdown},
		flow.ChildSpec{Name: "metrics", Run: p.runMetrics, Restart: flow.Permanent, Shutdown: childShutdown},
	)
	if p.cfg.Webhooks != nil {
		// Not stopped before the pool drains: a run finishing in the
		// grace may still wait for its webhook.
		out = append(out, flow.ChildSpec{Name: "webhooks", Run: p.cfg.Webhooks.run, Restart: flow.Permanent, Shutdown: childShutdown})
	}
	return out
}

// opsServer serves the ops endpoints on ln; after a restart (ln is closed by
// then) it listens again on the same address.
func (p *Processor) opsServer(ln net.Listener) func(context.Context) error {
	var mu sync.Mutex
	first := true
	return func(ctx context.Context) error {
		mu.Lock()
		l := ln
		if !first {
			var err error
			if l, err = net.Listen("tcp", ln.Addr().String()); err != nil {
				mu.Unlock()
				return err
			}
		}
		first = false
		mu.Unlock()
		return ops.Serve(ctx, ops.NewServer(p.mux), l, 2*time.Second)
	}
}

func (p *Processor) onSupervisorEvent(ev flow.SupervisorEvent) {
	p.m.supEvents.WithLabelValues(ev.Supervisor, ev.Kind.String()).Inc()
	switch ev.Kind {
	case flow.ChildRestarting:
		p.m.restarts.WithLabelValues(ev.Supervisor, ev.Child).Inc()
		p.log.Warn("restarting child", "supervisor", ev.Supervisor, "child", ev.Child,
			"restarts", ev.Restarts, "backoff", ev.Backoff, "err", ev.Err)
	case flow.ChildPanicked:
		p.log.Error("child panicked", "supervisor", ev.Supervisor, "child", ev.Child, "err", ev.Err)
	case flow.SupervisorGaveUp:
		p.log.Error("supervisor gave up", "supervisor", ev.Supervisor, "err", ev.Err)
	case flow.ChildAbandoned:
		p.log.Error("child ignored its context past its shutdown timeout; no longer waited for",
			"supervisor", ev.Supervisor, "child", ev.Child, "err", ev.Err)
	case flow.ChildExited:
		if ev.Err != nil && !errors.Is(ev.Err, context.Canceled) {
			p.log.Warn("child exited", "supervisor", ev.Supervisor, "child", ev.Child, "err", ev.Err)
		}
	}
}

func (p *Processor) setConsumer(name string, c jetstream.Consumer) {
	p.consMu.Lock()
	p.consumers[name] = c
	p.consMu.Unlock()
}

// runMetrics refreshes the consumer and DLQ gauges.
func (p *Processor) runMetrics(ctx context.Context) error {
	t := time.NewTicker(p.cfg.MetricsInterval)
	defer t.Stop()
	for {
		p.refreshMetrics(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Processor) refreshMetrics(ctx context.Context) {
	p.consMu.Lock()
	cons := make(map[string]jetstream.Consumer, len(p.consumers))
	for k, v := range p.consumers {
		cons[k] = v
	}
	p.consMu.Unlock()
	for name, c := range cons {
		info, err := c.Info(ctx)
		if err != nil {
			continue
		}
		p.m.pending.WithLabelValues(name).Set(float64(info.NumPending))
		p.m.ackPending.WithLabelValues(name).Set(float64(info.NumAckPending))
	}
	if s, err := p.js.Stream(ctx, streams.DLQ); err == nil {
		if info, err := s.Info(ctx); err == nil {
			p.m.dlq.Set(float64(info.State.Msgs))
		}
	}
}

// runningCount is how many jobs this process runs now (their provider
// call started and not ended).
func (r *deliveries) runningCount() int {
	n := 0
	for i := range r.byJob {
		s := &r.byJob[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
