// Package processor pulls jobs from the JOBS stream, runs each one against its
// provider inside an error boundary, behind a circuit breaker, under a
// supervisor, and records every change of a job with internal/jobstore.
// Retries happen by redelivery (NakWithDelay); jobs that cannot succeed end
// failed (Term) or dead (Term and a copy on the DLQ stream).
package processor

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// ErrInvalidConfig is wrapped by every configuration error of New.
var ErrInvalidConfig = errors.New("processor: invalid config")

// Defaults of Config.
const (
	DefaultAddr        = "127.0.0.1:9091"
	DefaultConcurrency = 32
	DefaultMaxPerUser  = 4
	DefaultJobTimeout  = 10 * time.Minute
	DefaultAckWait     = 30 * time.Second
	DefaultMaxDeliver  = 5
	DefaultBackoffMin  = time.Second
	DefaultBackoffMax  = time.Minute
	DefaultGrace       = 25 * time.Second
	DefaultSource      = "/beamline/processor"
	// DefaultStartedDelay is how long the started write of a first
	// delivery waits after its claim: a job done sooner goes from its
	// claim (running, seq 0, no event) straight to its outcome, seq 1
	// (started.go).
	DefaultStartedDelay = 25 * time.Millisecond
	// DefaultMaxResult leaves a job's final event (the snapshot with the
	// result, in an envelope of at most envelope.MaxSize = 1 MiB, plus NATS
	// headers within the default max_payload of 1 MiB) room for the other
	// fields. The http provider's default MaxResponse is the same.
	DefaultMaxResult = 900 << 10
	// DefaultProviderInflight is Config.ProviderInflight's default.
	DefaultProviderInflight = 100
)

// DefaultPriorityWeights serve high:normal:low as 6:3:1.
var DefaultPriorityWeights = [3]int{6, 3, 1}

// Config configures a Processor. Zero values are the documented defaults.
type Config struct {
	// Addr is where /metrics, /healthz and /readyz are served when Listener
	// is nil. Default DefaultAddr.
	Addr     string
	Listener net.Listener
	// Kinds are the kinds served; each gets one durable consumer per
	// priority. A kind whose Provider is "" is served by DefaultProvider.
	Kinds []config.Kind
	// Providers by name (Provider.Name()). Each provider gets one breaker.
	Providers       map[string]provider.Provider
	DefaultProvider string
	// Concurrency is the number of jobs this process runs at once (its
	// worker count). Default 32.
	Concurrency int
	// MaxPerUser is the number of one user's jobs that run at once; the
	// surplus waits in the waiting room. Default 4.
	MaxPerUser int
	// WaitingRoom bounds the jobs parked because their user is at
	// MaxPerUser. When full, a job is NakWithDelay'd, which costs it no
	// attempt (attempts are counted from its snapshot). Default
	// 4 × Concurrency.
	WaitingRoom int
	// Prefetch is how many messages each consumer (kind × priority) may hold
	// pulled but not yet picked by a worker. Small keeps priorities real and
	// heartbeats cheap; too small costs throughput. Default
	// max(2, Concurrency/2).
	Prefetch int
	// JobTimeout bounds one provider call; KindTimeouts overrides it per
	// kind. Default 10m.
	JobTimeout   time.Duration
	KindTimeouts map[string]time.Duration
	// AckWait of the consumers; InProgress heartbeats go out every
	// AckWait/3 for every message this process holds. Default 30s.
	AckWait time.Duration
	// MaxDeliver is the number of runs (attempts) a job gets: the last one
	// failing makes the job dead, and a delivery after it (the last run's
	// process died) is dead-lettered without running. The processor
	// enforces it, not JetStream: the consumers' max_deliver is -1, because
	// JetStream drops a message that exhausted max_deliver without telling
	// anyone, while the job must reach a terminal state. Attempts are
	// counted from the job's snapshot, so Naks that do not run the job
	// (waiting room, shutdown, open breaker) cost none. Default 5.
	MaxDeliver int
	// BackoffMin and BackoffMax bound the NakWithDelay backoff (exponential
	// in the attempt number, 20% jitter). Default 1s and 1m.
	BackoffMin, BackoffMax time.Duration
	// Grace is how long in-flight jobs may run on after shutdown starts;
	// then they are cancelled and Nak'd. Default 25s.
	Grace time.Duration
	// PriorityWeights are the weights of high, normal and low. Default 6,3,1.
	PriorityWeights [3]int
	// Breaker is the template of every provider's breaker (Name and
	// OnStateChange are set by the processor). Zero values are flow's
	// defaults: open when at least FailureRatio 0.5 of at least MinRequests
	// 20 calls within the rolling Interval of 10s failed, stay open
	// OpenTimeout 5s, then MaxRequests 3 probes. The breaker is for a
	// provider that is down: jobs failing one by one (a job's own transient
	// error, a poison job) do not make the volume or the ratio, so they are
	// retried by redelivery without pausing anyone else.
	Breaker flow.BreakerConfig
	// Source is the CloudEvents source of events. Default DefaultSource.
	Source string
	// PollWait is how long one pull request waits for messages; it also
	// bounds how long stopping the pullers takes. Default 1s.
	PollWait time.Duration
	// MetricsInterval is how often consumer and DLQ figures are refreshed.
	// Default 5s.
	MetricsInterval time.Duration
	// MaxResult bounds a provider's result, in bytes. A larger result could
	// not be stored nor announced, and the same input would produce it
	// again: the job ends failed ("result too large") without a result,
	// instead of being rerun until dead. At most envelope.MaxSize (a result
	// that still makes the final event too large is treated the same way).
	// Default DefaultMaxResult.
	MaxResult int
	// StartedDelay defers the running write at seq 1 and the started
	// event of a job's first delivery, which claims the job before the
	// provider call (running at seq 0, no event): a job that reaches its
	// outcome within it goes from the claim to its outcome directly (one
	// event, two KV writes and no read instead of four writes and a read),
	// so `started` announces only jobs that take time. Redeliveries always
	// read the job and write running first (started.go). Negative: no
	// claim; always read and write running before the call. Default
	// DefaultStartedDelay.
	StartedDelay time.Duration
	// TracerProvider makes the spans of attempts, provider calls and store
	// writes. nil means no tracing (traceparents still travel on).
	TracerProvider trace.TracerProvider
	// Outputs, when set, keeps the output URLs of a successful result
	// (outputs.Keeper: copies into the Object Store and rewrites the
	// result, docs/design.md#outputs) before the outcome is written. nil:
	// results are stored as the provider returned them.
	Outputs OutputKeeper
	// Webhooks, when set, is the webhook source the cog and replicate
	// providers were built with (NewWebhooks, -webhook-url): the processor
	// applies the WEBHOOKS stream and runs its one consumer (webhooks.go).
	Webhooks *Webhooks
	// HealthInterval is how often providers that check their health
	// (provider.HealthChecker: cog's GET /health-check) are asked; the
	// answer feeds /readyz and holds their kinds while it fails (health.go).
	// Default 5s.
	HealthInterval time.Duration
	// ProviderInflight bounds the remote work (predictions) of one
	// resuming provider (provider.AsResumable, by Provider.Name()) that
	// this process starts or awaits at once. Awaiting holds no worker
	// (inflight.go), so this, not Concurrency, bounds the waits; a job
	// past it waits for a slot without a worker and without counting an
	// attempt. Default DefaultProviderInflight.
	ProviderInflight int
	// OutputProviders limits Outputs to the results of these providers
	// (by Provider.Name()): a generic provider's result may hold links that
	// are not outputs at all. Empty: every provider's.
	OutputProviders []string
	// Previews, when set, stores the intermediate outputs a provider
	// reports while a job runs (Request.Preview: Cog and Replicate
	// outputs of a prediction still processing, the sim's images) as the
	// job's live preview, each announced by a progress event that names
	// it (docs/design.md#live-previews). nil: providers get no Preview
	// hook.
	Previews PreviewKeeper
	// PreviewInterval is the least time between two stored previews of
	// one job; newer ones supersede those that wait. Default
	// DefaultPreviewInterval.
	PreviewInterval time.Duration
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	bad := func(format string, args ...any) (Config, error) {
		return out, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	out.Addr = cmp.Or(out.Addr, DefaultAddr)
	out.Concurrency = cmp.Or(out.Concurrency, DefaultConcurrency)
	out.MaxPerUser = cmp.Or(out.MaxPerUser, DefaultMaxPerUser)
	out.WaitingRoom = cmp.Or(out.WaitingRoom, 4*out.Concurrency)
	out.Prefetch = cmp.Or(out.Prefetch, max(2, out.Concurrency/2))
	out.JobTimeout = cmp.Or(out.JobTimeout, DefaultJobTimeout)
	out.AckWait = cmp.Or(out.AckWait, DefaultAckWait)
	out.MaxDeliver = cmp.Or(out.MaxDeliver, DefaultMaxDeliver)
	out.BackoffMin = cmp.Or(out.BackoffMin, DefaultBackoffMin)
	out.BackoffMax = cmp.Or(out.BackoffMax, DefaultBackoffMax)
	out.Grace = cmp.Or(out.Grace, DefaultGrace)
	out.PriorityWeights = cmp.Or(out.PriorityWeights, DefaultPriorityWeights)
	out.Source = cmp.Or(out.Source, DefaultSource)
	out.PollWait = cmp.Or(out.PollWait, time.Second)
	out.MetricsInterval = cmp.Or(out.MetricsInterval, 5*time.Second)
	out.MaxResult = cmp.Or(out.MaxResult, DefaultMaxResult)
	out.StartedDelay = cmp.Or(out.StartedDelay, DefaultStartedDelay)
	out.PreviewInterval = cmp.Or(out.PreviewInterval, DefaultPreviewInterval)
	out.ProviderInflight = cmp.Or(out.ProviderInflight, DefaultProviderInflight)
	out.HealthInterval = cmp.Or(out.HealthInterval, 5*time.Second)
	switch {
	case out.Concurrency < 1:
		return bad("concurrency must be >= 1, got %d", out.Concurrency)
	case out.MaxPerUser < 1:
		return bad("max per user must be >= 1, got %d", out.MaxPerUser)
	case out.WaitingRoom < 0 || out.Prefetch < 1:
		return bad("waiting room must be >= 0 and prefetch >= 1")
	case out.JobTimeout < 0 || out.Grace < 0:
		return bad("job timeout and grace must not be negative")
	case out.AckWait < 300*time.Millisecond:
		return bad("ack wait must be >= 300ms, got %v", out.AckWait)
	case out.ProviderInflight < 1:
		return bad("provider inflight must be >= 1, got %d", out.ProviderInflight)
	case out.MaxDeliver < 1:
		return bad("max deliver must be >= 1, got %d", out.MaxDeliver)
	case out.BackoffMin < 0 || out.BackoffMax < out.BackoffMin:
		return bad("backoff must satisfy 0 <= min <= max, got %v..%v", out.BackoffMin, out.BackoffMax)
	case out.PollWait < 10*time.Millisecond:
		return bad("poll wait must be >= 10ms")
	case out.MaxResult < 1 || out.MaxResult > envelope.MaxSize:
		return bad("max result must be in 1..%d, got %d", envelope.MaxSize, out.MaxResult)
	case len(out.Kinds) == 0:
		return bad("no kinds")
	case out.Breaker.FailureRatio < 0 || out.Breaker.FailureRatio > 1:
		return bad("breaker failure ratio must be in (0, 1], got %v", out.Breaker.FailureRatio)
	case out.Breaker.OpenTimeout < 0:
		return bad("breaker open time must not be negative")
	case out.PreviewInterval < 0:
		return bad("preview interval must not be negative")
	}
	for _, w := range out.PriorityWeights {
		if w < 1 {
			return bad("priority weights must be >= 1, got %v", out.PriorityWeights)
		}
	}
	for k, d := range out.KindTimeouts {
		if d <= 0 {
			return bad("timeout of kind %q must be > 0", k)
		}
	}
	seen := map[string]bool{}
	for _, k := range out.Kinds {
		if err := envelope.ValidateKind(k.Name); err != nil {
			return bad("kind: %v", err)
		}
		if seen[k.Name] {
			return bad("kind %q listed twice", k.Name)
		}
		seen[k.Name] = true
		name := cmp.Or(k.Provider, out.DefaultProvider)
		if p := out.Providers[name]; p == nil {
			return bad("kind %q: no provider named %q", k.Name, name)
		}
	}
	for name, p := range out.Providers {
		if p == nil || p.Name() == "" {
			return bad("provider %q is nil or unnamed", name)
		}
	}
	return out, nil
}

// timeout is the provider-call timeout of kind.
func (c *Config) timeout(kind string) time.Duration {
	if d, ok := c.KindTimeouts[kind]; ok {
		return d
	}
	return c.JobTimeout
}

// providerName is the name (key of Providers) serving kind.
func (c *Config) providerName(k config.Kind) string {
	if k.Provider != "" {
		return k.Provider
	}
	return c.DefaultProvider
}

// ParseKindTimeouts reads "video=30m,image=2m".
func ParseKindTimeouts(s string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%w: kind timeout %q: want kind=duration", ErrInvalidConfig, part)
		}
		if err := envelope.ValidateKind(k); err != nil {
			return nil, fmt.Errorf("%w: kind timeout: %v", ErrInvalidConfig, err)
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: kind timeout %q: want a positive duration", ErrInvalidConfig, part)
		}
		out[k] = d
	}
	return out, nil
}
