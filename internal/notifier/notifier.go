package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/ops"
	"github.com/beamline/beamline/streams"
	"github.com/beamline/beamline/web"
)

// Service is one notifier.
type Service struct {
	cfg      Config
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *slog.Logger
	m        *metrics
	verifier *auth.Verifier
	store    *jobstore.Store
	events   *eventsReader // the EVENTS stream
	hub      *hub
	presence *presence
	sessions *lpRegistry // long-poll sessions
	upgrader websocket.Upgrader
	handler  http.Handler

	// ctx is cancelled when the service stops; NATS requests made for
	// clients hang off it.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	conns    map[*session]struct{}
	quit     chan struct{} // closed when shutting down
	stopping bool
	wg       sync.WaitGroup // connections, writers, SSE streams, the sweeper
}

// New builds a notifier. It opens the job_status bucket and the EVENTS
// stream, which must exist (jsm.ApplyStreams).
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if nc == nil || js == nil {
		return nil, fmt.Errorf("%w: NATS connection and JetStream are required", ErrInvalidConfig)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v, err := auth.NewVerifier(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	ictx, icancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer icancel()
	kv, err := jsm.JobStatus(ictx, js)
	if err != nil {
		return nil, fmt.Errorf("notifier: open job_status: %w", err)
	}
	events, err := js.Stream(ictx, streams.Events)
	if err != nil {
		return nil, fmt.Errorf("notifier: open %s: %w", streams.Events, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg: cfg, nc: nc, js: js, log: log.With("component", "notifier"), m: m, verifier: v,
		store:  jobstore.New(js, kv, jobstore.Config{Source: "/beamline/notifier"}),
		events: newEventsReader(js, events),
		ctx:    ctx, cancel: cancel,
		conns: map[*session]struct{}{},
		quit:  make(chan struct{}),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 4096,
			WriteBufferPool: &sync.Pool{},
			// Origins are checked before Upgrade so a refusal is an empty 403.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	s.events.direct.Hide = cfg.hideDirect
	s.hub = newHub(hubConfig{
		ctx: ctx, nc: nc, stream: s.events, log: s.log, subscriptions: m.subscriptions, traceOf: s.traceOf,
		reconcileEvery: cfg.reconcileEvery, beforeRefill: cfg.beforeRefill, sweepBatch: cfg.sweepBatch, laneDepth: cfg.laneDepth,
	})
	s.presence = newPresence(nc, s.log, cfg.PresenceNode, cfg.PresenceInterval)
	if err := registerPresenceMetrics(reg, s.presence); err != nil {
		cancel()
		return nil, err
	}
	s.sessions = newLPRegistry()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /socket/websocket", s.serveWebSocket)
	mux.HandleFunc("/socket/longpoll", s.serveLongPoll)
	mux.HandleFunc("GET /v1/jobs/{id}/events", s.serveSSE)
	ops.Register(mux, gathererOf(reg), ops.NATSReady(nc, js))
	switch {
	case cfg.Static != nil:
		mux.Handle("/", cfg.Static)
	case cfg.Demo:
		mux.Handle("/", web.Handler())
	default:
		mux.Handle("/", web.ClientHandler())
	}
	s.handler = mux
	return s, nil
}

func gathererOf(reg prometheus.Registerer) prometheus.Gatherer {
	if g, ok := reg.(prometheus.Gatherer); ok {
		return g
	}
	return prometheus.NewRegistry()
}

// Handler serves the WebSocket endpoint, SSE, /metrics, /healthz, /readyz,
// the client files and the dashboard (and the demo page with Config.Demo).
func (s *Service) Handler() http.Handler { return s.handler }

// Run serves until ctx is done, then closes every WebSocket with 1012
// (service restart) so clients reconnect to another notifier, ends every SSE
// stream, and waits for every goroutine it started.
func (s *Service) Run(ctx context.Context) error {
	ln, err := ops.Listen(s.cfg.Listener, s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("notifier: listen: %w", err)
	}
	stopPresence, err := s.startPresence()
	if err != nil {
		_ = ln.Close()
		return err
	}
	s.log.Info("notifier listening", "addr", ln.Addr().String())
	status := s.nc.StatusChanged(nats.CONNECTED)
	defer s.nc.RemoveStatusListener(status)

	serveCtx, stopServe := context.WithCancel(context.Background())
	defer stopServe()
	errc := make(chan error, 1)
	go func() { errc <- ops.Serve(serveCtx, ops.NewServer(s.handler), ln, 5*time.Second) }()

	// One goroutine reconciles every topic with the stream now and then,
	// and refills them all after a reconnect.
	refill := make(chan struct{}, 1)
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	defer stopSweep()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.hub.sweepLoop(sweepCtx, refill)
	}()
	s.hub.runLanes(sweepCtx, &s.wg)

	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			serveErr, errc = err, nil
			break loop
		case <-status:
			// Reconnected: live messages sent meanwhile are lost; read
			// what the stream got while we were away.
			s.log.Info("nats reconnected; filling gaps from the stream")
			select {
			case refill <- struct{}{}:
			default: // one is pending already
			}
		}
	}
	s.shutdown()
	stopSweep()
	stopServe()
	if errc != nil {
		serveErr = <-errc
	}
	s.wg.Wait()
	stopPresence()
	s.cancel()
	if errors.Is(serveErr, context.Canceled) {
		serveErr = nil
	}
	return serveErr
}

// shutdown refuses new connections and closes the open ones with 1012.
func (s *Service) shutdown() {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	s.stopping = true
	close(s.quit)
	s.mu.Unlock()
	s.closeAll(disconnectShutdown)
}

// closeAll ends every open session with d.
func (s *Service) closeAll(d disconnect) {
	s.mu.Lock()
	conns := make([]*session, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.fail(d)
	}
}

func (s *Service) addConn(c *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.m.connections.Inc()
	return true
}

func (s *Service) removeConn(c *session) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.m.connections.Dec()
	s.wg.Done()
}

// Broadcast sends event with payload (which must encode to a JSON object) to
// every client on this notifier joined to topic. It is meant for
// server-originated topics such as admin:metrics; job and user topics are fed
// from the EVENTS stream.
func (s *Service) Broadcast(topic, name string, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("notifier: broadcast %s: %w", topic, err)
	}
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("notifier: broadcast %s: payload must be a JSON object", topic)
	}
	s.hub.dispatch(topic, &event{name: name, payload: b})
	return nil
}
