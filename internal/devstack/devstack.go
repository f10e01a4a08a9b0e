// Package devstack runs the whole pipeline in one process on an embedded
// nats-server: ingest, the processor with the simulated provider, and the
// notifier, each with its own NATS connection and metrics registry exactly
// as the separate binaries would have. cmd/devstack, the browser tests and
// the benchmark harness start it through here.
package devstack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/notifier"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
)

// ErrInvalidConfig is wrapped by configuration errors.
var ErrInvalidConfig = errors.New("devstack: invalid config")

// Config configures a Stack. Zero values are the defaults of cmd/devstack.
type Config struct {
	// DataDir holds the JetStream store. Default "./data".
	DataDir string
	// NATSPort is the embedded server's client port on 127.0.0.1: 0 means
	// natsx.DefaultPort (4222), -1 a random free port.
	NATSPort int
	// IngestAddr, NotifierAddr and ProcessorAddr are the HTTP listen
	// addresses. Defaults: the services' own DefaultAddr (127.0.0.1:8080,
	// 127.0.0.1:8090, 127.0.0.1:9091);
	// "127.0.0.1:0" picks a free port.
	IngestAddr, NotifierAddr, ProcessorAddr string
	// Secret signs and verifies tokens; at least 16 bytes. Default: the
	// dev secret kept in DataDir (SecretFile, created 0600 on the first
	// start), so tokens stay valid across restarts on the same data.
	Secret []byte
	// Grace is how long running jobs may finish on shutdown, and
	// JobTimeout bounds one provider call. Defaults: the processor's
	// (processor.DefaultGrace, processor.DefaultJobTimeout); cmd/devstack
	// sets shorter ones that suit a laptop.
	Grace, JobTimeout time.Duration
	// Kinds served. Default image and video with the sim provider; a kind
	// may name another provider (video=cog).
	Kinds []config.Kind
	// CogURLs are the Cog servers of the cog provider, when a kind uses
	// it. Default provider.DefaultCogURL.
	CogURLs []string
	// Replicate configures the replicate:<model> providers, when a kind
	// uses one: URL (default provider.DefaultReplicateURL) and Token
	// (cmd/devstack reads $REPLICATE_API_TOKEN); the model comes from the
	// kind.
	Replicate provider.ReplicateConfig
	// WebhookURL is the base URL Cog and Replicate send webhooks to (the
	// processor's -webhook-url). Default: the stack's own ingest, so cog
	// kinds resume after a crash. "none": no webhooks. A Cog container
	// reaches the host at another address (http://host.docker.internal:8080
	// on Docker Desktop). Replicate's hosted API cannot reach a loopback
	// address: it gets webhooks only with ReplicateWebhookSecret and a
	// non-loopback URL (a tunnel), or a Replicate.URL that is not the
	// public API (a fake); else it polls.
	WebhookURL string
	// ReplicateWebhookSecret is the "whsec_..." secret ingest verifies
	// Replicate webhooks with (cmd/devstack reads
	// $BEAMLINE_REPLICATE_WEBHOOK_SECRET).
	ReplicateWebhookSecret string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Tune, when set, adjusts the service configurations before they are
	// built (tests shorten timeouts, the benchmark raises concurrency).
	Tune Tuning
}

// Stack is a running pipeline.
type Stack struct {
	cfg     Config
	log     *slog.Logger
	NATS    *server.Server
	NATSURL string
	// Base URLs of the HTTP services, e.g. http://127.0.0.1:8080.
	IngestURL, NotifierURL, ProcessorURL string
	// Token is a dev token for the user "dev"; AdminToken also has admin.
	Token, AdminToken string

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	parts  map[string]*part
	order  []string
	failed chan struct{}
	once   sync.Once
	err    error
}

// part is one service running under the stack.
type part struct {
	name   string
	addr   string
	start  func(ctx context.Context, ln net.Listener) (func(ctx context.Context) error, error)
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Start brings the stack up and returns when every service is serving.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "./data"
	}
	if len(cfg.Secret) == 0 {
		key, err := devSecret(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		cfg.Secret = key
	}
	if len(cfg.Secret) < auth.MinSecretLen {
		return nil, fmt.Errorf("%w: Secret: %w", ErrInvalidConfig, auth.ErrNoSecret)
	}
	if cfg.Grace < 0 || cfg.JobTimeout < 0 {
		return nil, fmt.Errorf("%w: Grace and JobTimeout must not be negative", ErrInvalidConfig)
	}
	if tune := cfg.Tune.Processor; cfg.Grace > 0 || cfg.JobTimeout > 0 {
		// Before the caller's own tuning, which may still change them.
		grace, timeout := cfg.Grace, cfg.JobTimeout
		cfg.Tune.Processor = func(pc *processor.Config) {
			pc.Grace, pc.JobTimeout = cmp.Or(grace, pc.Grace), cmp.Or(timeout, pc.JobTimeout)
			if tune != nil {
				tune(pc)
			}
		}
	}
	if cfg.NATSPort == 0 {
		cfg.NATSPort = natsx.DefaultPort
	}
	if cfg.IngestAddr == "" {
		cfg.IngestAddr = ingest.DefaultAddr
	}
	if cfg.NotifierAddr == "" {
		cfg.NotifierAddr = notifier.DefaultAddr
	}
	if cfg.ProcessorAddr == "" {
		cfg.ProcessorAddr = processor.DefaultAddr
	}
	if len(cfg.Kinds) == 0 {
		cfg.Kinds, _ = config.ParseKinds(config.DefaultKinds)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Stack{cfg: cfg, log: cfg.Logger, parts: map[string]*part{}, failed: make(chan struct{})}
	var err error
	if s.Token, err = auth.Issue(cfg.Secret, "dev", false, 30*24*time.Hour); err != nil {
		return nil, err
	}
	if s.AdminToken, err = auth.Issue(cfg.Secret, "admin", true, 30*24*time.Hour); err != nil {
		return nil, err
	}
	s.NATS, err = natsx.RunEmbedded(natsx.EmbeddedConfig{Port: cfg.NATSPort, StoreDir: cfg.DataDir, ServerName: "devstack"})
	if err != nil {
		return nil, err
	}
	s.NATSURL = s.NATS.ClientURL()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.applyStreams(ctx); err != nil {
		s.Close()
		return nil, err
	}
	for _, p := range s.services() {
		if err := s.startPart(ctx, p); err != nil {
			s.Close()
			return nil, fmt.Errorf("devstack: start %s: %w", p.name, err)
		}
	}
	return s, nil
}

func (s *Stack) applyStreams(ctx context.Context) error {
	nc, js, err := s.connect(ctx, "beamline-devstack")
	if err != nil {
		return err
	}
	defer nc.Close()
	return jsm.Setup(ctx, js, jsm.Options{})
}

// connect opens a NATS connection for one service; Close closes it.
func (s *Stack) connect(ctx context.Context, name string) (*nats.Conn, jetstream.JetStream, error) {
	// Each service on its own inbox prefix (_INBOX_ingest, ...), as the
	// binaries connect.
	nc, err := natsx.Connect(ctx, s.NATSURL, name, s.log.With("component", name),
		natsx.Inbox(strings.TrimPrefix(name, "beamline-")))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func (s *Stack) startPart(ctx context.Context, p *part) error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.addr = ln.Addr().String() // a restart reuses the port picked now
	pctx, cancel := context.WithCancel(s.ctx)
	run, err := p.start(ctx, ln)
	if err != nil {
		cancel()
		ln.Close()
		return err
	}
	p.cancel, p.done, p.err = cancel, make(chan struct{}), nil
	go func() {
		defer close(p.done)
		err := run(pctx)
		if err != nil && pctx.Err() == nil {
			p.err = err
			s.fail(fmt.Errorf("devstack: %s stopped: %w", p.name, err))
		}
	}()
	s.mu.Lock()
	if _, ok := s.parts[p.name]; !ok {
		s.order = append(s.order, p.name)
	}
	s.parts[p.name] = p
	s.mu.Unlock()
	url := "http://" + p.addr
	switch p.name {
	case "ingest":
		s.IngestURL = url
	case "notifier":
		s.NotifierURL = url
	case "processor":
		s.ProcessorURL = url
	}
	return waitHealthy(ctx, url+"/healthz")
}

func (s *Stack) fail(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.failed)
	})
}

// Failed is closed when a service stopped on its own; Err says why.
func (s *Stack) Failed() <-chan struct{} { return s.failed }

// Err is the error of the first service that stopped on its own.
func (s *Stack) Err() error {
	select {
	case <-s.failed:
		return s.err
	default:
		return nil
	}
}

// StopService stops one service ("ingest", "processor" or "notifier")
// gracefully, as a SIGTERM of its binary would; StartService starts it
// again on the same address.
func (s *Stack) StopService(name string) error {
	s.mu.Lock()
	p, ok := s.parts[name]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("devstack: no service %q", name)
	}
	p.cancel()
	<-p.done
	return p.err
}

// StartService starts a stopped service again on its old address.
func (s *Stack) StartService(ctx context.Context, name string) error {
	s.mu.Lock()
	p, ok := s.parts[name]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("devstack: no service %q", name)
	}
	select {
	case <-p.done:
	default:
		return fmt.Errorf("devstack: %s is running", name)
	}
	return s.startPart(ctx, p)
}

// Close stops the services in reverse order of start, then the NATS server.
func (s *Stack) Close() error {
	s.mu.Lock()
	order := append([]string(nil), s.order...)
	s.mu.Unlock()
	var errs []error
	for i := len(order) - 1; i >= 0; i-- {
		if err := s.StopService(order[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.NATS != nil {
		s.NATS.Shutdown()
		s.NATS.WaitForShutdown()
	}
	return errors.Join(errs...)
}

func waitHealthy(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devstack: %s not healthy: %w", url, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
