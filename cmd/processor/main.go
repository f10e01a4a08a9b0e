// Command processor pulls jobs from NATS JetStream and runs them against a
// provider (sim or http), publishing status events and keeping the
// job_status KV current. Several processors share the durable consumers.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/flow"
)

func main() { config.Main("processor", run) }

// run processes jobs until ctx is done. Bad flags or configuration are
// config.Invalid (exit 2); a failure of the service is any other error.
func run(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs, common := config.NewFlags("processor", stderr)
	var cfg processor.Config
	var providerName, httpURL, kindTimeouts, cogURLs, replicateURL, webhookURL string
	fs.StringVar(&cfg.Addr, "addr", processor.DefaultAddr, "address of /metrics, /healthz and /readyz")
	fs.StringVar(&providerName, "provider", "sim", "default provider: sim, http or cog (per kind: -kinds video=cog,image=replicate:owner/name)")
	fs.StringVar(&cogURLs, "cog-url", "", "Cog servers of the cog provider, URL[,URL...] (default "+provider.DefaultCogURL+")")
	fs.StringVar(&replicateURL, "replicate-url", provider.DefaultReplicateURL, "Replicate API base of replicate:<model> providers (token from $"+provider.EnvReplicateToken+")")
	replicateStream := fs.Bool("replicate-stream", false,
		"create Replicate predictions with \"stream\": true and read their server-sent events while waiting: output events become previews, done fetches the prediction at once (webhooks and polls go on; the outcome always comes from the prediction)")
	fs.StringVar(&webhookURL, "webhook-url", "",
		"public base URL of ingest that Cog and Replicate send webhooks to (e.g. https://api.example.com); empty: no webhooks, Replicate is polled and Cog answers synchronously. Cog tokens are keyed with $"+provider.EnvWebhookKey+", or else derived from $BEAMLINE_AUTH_SECRET")
	fs.StringVar(&httpURL, "http-url", os.Getenv(provider.EnvHTTPURL), "URL of the http provider (default $"+provider.EnvHTTPURL+")")
	fs.IntVar(&cfg.Concurrency, "concurrency", processor.DefaultConcurrency, "jobs run at once by this process")
	fs.IntVar(&cfg.MaxPerUser, "max-per-user", processor.DefaultMaxPerUser, "jobs of one user run at once (jobs awaiting remote work included)")
	fs.IntVar(&cfg.ProviderInflight, "provider-inflight", processor.DefaultProviderInflight,
		"predictions one resuming provider (cog with webhooks, replicate) may have in flight from this process; awaiting one holds no worker")
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
		"defer a first run's running write and started event by this long after it claims the job (running, seq 0, no event); a job done sooner goes claim -> outcome, one event (0: no claim, always write running first)")
	var minRequests uint
	fs.UintVar(&minRequests, "breaker-min-requests", flow.DefaultBreakerMinRequests,
		"provider breaker: calls within its 10s window below which it never opens")
	fs.Float64Var(&cfg.Breaker.FailureRatio, "breaker-failure-ratio", flow.DefaultBreakerFailureRatio,
		"provider breaker: opens when at least this share (0-1] of the calls within its window failed")
	fs.DurationVar(&cfg.Breaker.OpenTimeout, "breaker-open", flow.DefaultBreakerOpenTimeout,
		"provider breaker: how long it stays open before letting a few probe calls through")
	var ocfg outputs.FetchConfig
	var outputsTTL time.Duration
	var keepOutputs bool
	fs.BoolVar(&keepOutputs, "outputs", true, "copy the output URLs of results (data: and http(s)) into the Object Store bucket outputs, and name them in the result")
	var outputProviders string
	fs.StringVar(&outputProviders, "outputs-providers", "cog,replicate",
		"providers whose results' output URLs are kept (comma-separated; empty: every provider's)")
	fs.DurationVar(&outputsTTL, "outputs-ttl", outputs.DefaultTTL, "how long stored outputs are kept")
	fs.Int64Var(&ocfg.MaxBytes, "outputs-max-bytes", outputs.DefaultMaxBytes, "size cap of one output; a larger one fails its job")
	fs.DurationVar(&ocfg.Timeout, "outputs-timeout", outputs.DefaultFetchTimeout, "timeout of one output download")
	fs.BoolVar(&ocfg.AllowPrivate, "outputs-allow-private", false,
		"DEVELOPMENT AND TESTS ONLY: let output downloads use http and loopback, private or link-local addresses")
	var previews bool
	fs.BoolVar(&previews, "previews", true,
		"with -outputs: store the outputs a provider reports while a job runs as the job's live preview, named by its progress events "+
			"(URLs signed with $"+outputs.EnvKey+" when it is set, the key ingest verifies)")
	fs.DurationVar(&cfg.PreviewInterval, "preview-interval", processor.DefaultPreviewInterval, "least time between two stored previews of one job")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: processor [flags]\n\nRuns Beamline jobs from NATS JetStream.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := config.Parse(fs, args); err != nil {
		return err
	}
	if minRequests < 1 || minRequests > math.MaxUint32 {
		return config.Invalid(fmt.Errorf("-breaker-min-requests must be in 1..%d, got %d", uint32(math.MaxUint32), minRequests))
	}
	cfg.Breaker.MinRequests = uint32(minRequests)
	if cfg.Breaker.FailureRatio <= 0 || cfg.Breaker.FailureRatio > 1 || cfg.Breaker.OpenTimeout <= 0 {
		return config.Invalid(errors.New("-breaker-failure-ratio must be in (0, 1] and -breaker-open > 0"))
	}
	log, err := common.Logger(stderr)
	if err != nil {
		return err
	}
	if cfg.Kinds, err = common.ParsedKinds(); err != nil {
		return err
	}
	if cfg.KindTimeouts, err = processor.ParseKindTimeouts(kindTimeouts); err != nil {
		return config.Invalid(err)
	}
	if cfg.StartedDelay == 0 {
		cfg.StartedDelay = -1 // the flag's 0 means off; Config's zero is the default
	}
	var previewSigner *outputs.Signer // nil: previews carry no signed URL
	if k := os.Getenv(outputs.EnvKey); k != "" {
		if previewSigner, err = outputs.NewSignerKey([]byte(k)); err != nil {
			return config.Invalid(fmt.Errorf("$%s: %w", outputs.EnvKey, err))
		}
	}
	pcfg := provider.Config{HTTP: provider.HTTPConfigFromEnv(os.Getenv)}
	pcfg.HTTP.URL = httpURL
	pcfg.Cog.URLs = provider.ParseCogURLs(cogURLs)
	pcfg.Replicate = provider.ReplicateConfigFromEnv(os.Getenv)
	pcfg.Replicate.URL = replicateURL
	pcfg.Replicate.Stream = *replicateStream
	pcfg.Replicate.Logger = log
	if webhookURL != "" {
		// The same key function as ingest's, so the tokens match.
		key, err := provider.WebhookKey(os.Getenv)
		if err != nil {
			return config.Invalid(fmt.Errorf("-webhook-url: %w", err))
		}
		hooks, err := processor.NewWebhooks(webhookURL, key)
		if err != nil {
			return config.Invalid(err)
		}
		pcfg.Cog.Webhooks, pcfg.Replicate.Webhooks, cfg.Webhooks = hooks, hooks, hooks
	}
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
			return config.Invalid(fmt.Errorf("provider %s: %w", name, err))
		}
		cfg.Providers[name] = p
	}
	cfg.DefaultProvider = providerName

	return common.Serve(ctx, "processor", log, func(d config.Deps) (config.Service, error) {
		cfg.TracerProvider = d.Tracer
		if keepOutputs {
			keeper, err := newKeeper(ctx, d, common.Replicas, outputsTTL, ocfg)
			if err != nil {
				return config.Service{}, err
			}
			if ocfg.AllowPrivate {
				log.Warn("-outputs-allow-private is set: output downloads may reach http, loopback and private addresses (development only)")
			}
			cfg.Outputs = keeper
			if previews {
				cfg.Previews = &outputs.Previewer{Store: keeper.Store, Fetcher: keeper.Fetcher, Signer: previewSigner}
			}
			for _, name := range strings.Split(outputProviders, ",") {
				if name = strings.TrimSpace(name); name != "" {
					cfg.OutputProviders = append(cfg.OutputProviders, name)
				}
			}
		}
		p, err := processor.New(cfg, d.NC, d.JS, log, d.Registry)
		if err != nil {
			return config.Service{}, err
		}
		return config.Service{Run: p.Run}, nil
	})
}

// newKeeper creates (or updates) the outputs bucket and the fetcher of the
// processor's output keeper.
func newKeeper(ctx context.Context, d config.Deps, replicas int, ttl time.Duration, fc outputs.FetchConfig) (*outputs.Keeper, error) {
	f, err := outputs.NewFetcher(fc)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := outputs.CreateStore(sctx, d.JS, outputs.StoreConfig{Replicas: replicas, TTL: ttl, MaxBytes: fc.MaxBytes})
	if err != nil {
		return nil, err
	}
	return &outputs.Keeper{Store: st, Fetcher: f}, nil
}
