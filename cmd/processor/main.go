// Command processor pulls jobs from NATS JetStream and runs them against a
// provider (sim or http), publishing status events and keeping the
// job_status KV current. Several processors share the durable consumers.
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/flow"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "processor:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("processor", flag.ContinueOnError)
	var common config.Common
	common.Register(fs)
	var cfg processor.Config
	var providerName, httpURL, kindTimeouts string
	fs.StringVar(&cfg.Addr, "addr", processor.DefaultAddr, "address of /metrics, /healthz and /readyz")
	fs.StringVar(&providerName, "provider", "sim", "default provider: sim or http")
	fs.StringVar(&httpURL, "http-url", os.Getenv(provider.EnvHTTPURL), "URL of the http provider (default $"+provider.EnvHTTPURL+")")
	fs.IntVar(&cfg.Concurrency, "concurrency", processor.DefaultConcurrency, "jobs run at once by this process")
	fs.IntVar(&cfg.MaxPerUser, "max-per-user", processor.DefaultMaxPerUser, "jobs of one user run at once")
	fs.DurationVar(&cfg.JobTimeout, "job-timeout", processor.DefaultJobTimeout, "timeout of one provider call")
	fs.StringVar(&kindTimeouts, "kind-timeout", "", "per-kind job timeouts, e.g. video=30m,image=2m")
	fs.DurationVar(&cfg.AckWait, "ack-wait", processor.DefaultAckWait, "consumer ack_wait (heartbeats every ack-wait/3)")
	// Enforced by the processor, not JetStream (the consumers' max_deliver
	// is -1): JetStream drops a message that exhausted max_deliver without
	// telling anyone, and the job must still end in a terminal state.
	fs.IntVar(&cfg.MaxDeliver, "max-deliver", processor.DefaultMaxDeliver,
		"runs (attempts) a failing job gets before it is dead; enforced by the processor, so Naks that run nothing cost none and a run lost with its process counts")
	fs.DurationVar(&cfg.Grace, "grace", processor.DefaultGrace, "how long running jobs may finish after SIGTERM")
	fs.DurationVar(&cfg.StartedDelay, "started-delay", processor.DefaultStartedDelay,
		"defer a first run's running write and started event by this long; a job done sooner goes queued -> outcome in one write (0: always write running first)")
	var minRequests uint
	fs.UintVar(&minRequests, "breaker-min-requests", flow.DefaultBreakerMinRequests,
		"provider breaker: calls within its 10s window below which it never opens")
	fs.Float64Var(&cfg.Breaker.FailureRatio, "breaker-failure-ratio", flow.DefaultBreakerFailureRatio,
		"provider breaker: opens when at least this share (0-1] of the calls within its window failed")
	fs.DurationVar(&cfg.Breaker.OpenTimeout, "breaker-open", flow.DefaultBreakerOpenTimeout,
		"provider breaker: how long it stays open before letting a few probe calls through")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: processor [flags]\n\nRuns Beamline jobs from NATS JetStream.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	if minRequests < 1 || minRequests > math.MaxUint32 {
		return fmt.Errorf("-breaker-min-requests must be in 1..%d, got %d", uint32(math.MaxUint32), minRequests)
	}
	cfg.Breaker.MinRequests = uint32(minRequests)
	if cfg.Breaker.FailureRatio <= 0 || cfg.Breaker.FailureRatio > 1 || cfg.Breaker.OpenTimeout <= 0 {
		return fmt.Errorf("-breaker-failure-ratio must be in (0, 1] and -breaker-open > 0")
	}
	log, err := common.Logger()
	if err != nil {
		return err
	}
	if cfg.Kinds, err = common.ParsedKinds(); err != nil {
		return err
	}
	if cfg.KindTimeouts, err = processor.ParseKindTimeouts(kindTimeouts); err != nil {
		return err
	}
	if cfg.StartedDelay == 0 {
		cfg.StartedDelay = -1 // the flag's 0 means off; Config's zero is the default
	}
	pcfg := provider.Config{HTTP: provider.HTTPConfigFromEnv(os.Getenv)}
	pcfg.HTTP.URL = httpURL
	if path := os.Getenv(provider.EnvSimCallLog); path != "" { // test hook (test/faults)
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("$%s: %w", provider.EnvSimCallLog, err)
		}
		defer f.Close()
		pcfg.Sim.CallLog = f
	}
	cfg.Providers = map[string]provider.Provider{}
	names := map[string]bool{providerName: true}
	for _, k := range cfg.Kinds {
		if k.Provider != "" {
			names[k.Provider] = true
		}
	}
	for name := range names {
		p, err := provider.New(name, pcfg)
		if err != nil {
			return fmt.Errorf("provider %s: %w", name, err)
		}
		cfg.Providers[name] = p
	}
	cfg.DefaultProvider = providerName

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	nc, err := natsx.Connect(ctx, common.NATSURL, "beamline-processor", log, natsx.Inbox("processor"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = jsm.ApplyStreams(actx, js, jsm.Options{Replicas: common.Replicas})
	cancel()
	if err != nil {
		return err
	}
	shutdownTracing, err := telemetry.SetupTracing(ctx, "beamline-processor")
	if err != nil {
		return err
	}
	defer func() { _ = shutdownTracing(context.WithoutCancel(ctx)) }()
	cfg.TracerProvider = telemetry.GlobalTracerProvider()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := processor.New(cfg, nc, js, log, reg)
	if err != nil {
		return err
	}
	return telemetry.RunWithMetrics(ctx, nc, "processor", reg, nil, log, p.Run)
}
