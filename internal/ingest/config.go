package ingest

import (
	"cmp"
	"fmt"
	"net"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/pkg/envelope"
)

// Defaults of Config's zero values.
const (
	DefaultAddr         = "127.0.0.1:8080"
	DefaultMaxBody      = 1 << 20 // 1 MiB
	DefaultMaxBatchBody = 16 << 20
	DefaultMaxInFlight  = 256
	// DefaultOutputsCacheBytes is the default Config.OutputsCacheBytes.
	DefaultOutputsCacheBytes = 64 << 20
	DefaultRequestTimeout    = 5 * time.Second
	DefaultGrace             = 10 * time.Second
	DefaultSource            = "/beamline/ingest"
)

// Config configures the ingest service. Zero values are the documented
// defaults; Kinds and Secret are required.
type Config struct {
	// Addr is where Run listens when Listener is nil. Default DefaultAddr.
	Addr string
	// Listener, when set, is served instead of listening on Addr (tests and
	// devstack pass 127.0.0.1:0 listeners). Run closes it.
	Listener net.Listener
	// Kinds are the job kinds some processor is configured to serve. A
	// submission of any other kind is refused with 400 unknown_kind.
	Kinds []string
	// Secret is the HS256 key of the bearer tokens (at least 16 bytes).
	Secret []byte
	// OutputsKey, when set, signs and verifies the signed output URLs
	// instead of a key derived from Secret ($BEAMLINE_OUTPUTS_KEY, shared
	// with the processors that sign preview URLs; at least 16 bytes).
	OutputsKey []byte
	// OutputsCacheBytes bounds the chunks of recently served outputs kept
	// in memory (outputs.Store.CacheChunks): a player seeking through a
	// video reads them again without a round trip to JetStream. Default
	// DefaultOutputsCacheBytes; negative: no cache.
	OutputsCacheBytes int64
	// MaxBody bounds a request body; larger bodies get 413. Default 1 MiB.
	MaxBody int64
	// MaxBatchBody bounds a POST /v1/jobs/batch body; larger bodies get
	// 413. Default 16 MiB.
	MaxBatchBody int64
	// MaxInFlight bounds the submissions handled at once; beyond it POST
	// gets 429 with Retry-After. Default 256.
	MaxInFlight int
	// WebhookMaxInFlight bounds the provider webhooks handled at once, in
	// a pool of their own (a webhook flood neither takes the submissions'
	// slots nor is let through unbounded); beyond it POST /v1/webhooks/...
	// gets 429 with Retry-After, which providers retry. Default
	// DefaultMaxInFlight.
	WebhookMaxInFlight int
	// RequestTimeout bounds each NATS round trip of a request (the publish
	// and its PubAck, a KV read or write). Default 5s.
	RequestTimeout time.Duration
	// Grace is how long Run lets in-flight requests finish at shutdown.
	// Default 10s.
	Grace time.Duration
	// Source is the CloudEvents source of the envelopes ingest writes.
	// Default "/beamline/ingest".
	Source string
	// CORSOrigins are the browser origins (scheme://host[:port], see
	// ParseOrigins) allowed to call the API from another origin; preflights
	// from any other origin get 403. Default none.
	CORSOrigins []string
	// TracerProvider makes the server span of each request; nil means no
	// tracing (an incoming traceparent is still forwarded).
	TracerProvider trace.TracerProvider

	// ReplicateWebhookSecret is the "whsec_..." secret Replicate signs its
	// webhooks with ($BEAMLINE_REPLICATE_WEBHOOK_SECRET). Empty: POST
	// /v1/webhooks/replicate answers 404.
	ReplicateWebhookSecret string
	// WebhookKey is the key of the tokens in Cog webhook URLs
	// (provider.WebhookKey: $BEAMLINE_WEBHOOK_KEY, else derived from the
	// auth secret). nil: POST /v1/webhooks/cog/... answers 404.
	WebhookKey []byte
	// WebhookMaxBody bounds a webhook body; larger gets 413. Default
	// DefaultWebhookMaxBody.
	WebhookMaxBody int64
	// WebhookTolerance is how far a signed webhook's timestamp may be from
	// now. Default DefaultWebhookTolerance (5 minutes).
	WebhookTolerance time.Duration
}

func (c Config) withDefaults() (Config, error) {
	c.Addr = cmp.Or(c.Addr, DefaultAddr)
	c.MaxBody = cmp.Or(c.MaxBody, DefaultMaxBody)
	c.MaxBatchBody = cmp.Or(c.MaxBatchBody, DefaultMaxBatchBody)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	c.WebhookMaxInFlight = cmp.Or(c.WebhookMaxInFlight, DefaultMaxInFlight)
	c.OutputsCacheBytes = cmp.Or(c.OutputsCacheBytes, DefaultOutputsCacheBytes)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, DefaultRequestTimeout)
	c.Grace = cmp.Or(c.Grace, DefaultGrace)
	c.Source = cmp.Or(c.Source, DefaultSource)
	c.WebhookMaxBody = cmp.Or(c.WebhookMaxBody, DefaultWebhookMaxBody)
	c.WebhookTolerance = cmp.Or(c.WebhookTolerance, DefaultWebhookTolerance)
	switch {
	case c.MaxBody < 0:
		return c, fmt.Errorf("%w: MaxBody must be > 0", ErrInvalidConfig)
	case c.MaxBatchBody < 0:
		return c, fmt.Errorf("%w: MaxBatchBody must be > 0", ErrInvalidConfig)
	case c.MaxInFlight < 0 || c.WebhookMaxInFlight < 0:
		return c, fmt.Errorf("%w: MaxInFlight and WebhookMaxInFlight must be > 0", ErrInvalidConfig)
	case c.RequestTimeout < 0:
		return c, fmt.Errorf("%w: RequestTimeout must be > 0", ErrInvalidConfig)
	case c.WebhookMaxBody < 0 || c.WebhookTolerance < 0:
		return c, fmt.Errorf("%w: WebhookMaxBody and WebhookTolerance must be > 0", ErrInvalidConfig)
	case c.WebhookKey != nil && len(c.WebhookKey) < auth.MinSecretLen:
		return c, fmt.Errorf("%w: WebhookKey must be at least %d bytes", ErrInvalidConfig, auth.MinSecretLen)
	case c.Grace < 0:
		return c, fmt.Errorf("%w: Grace must be > 0", ErrInvalidConfig)
	case len(c.Secret) < auth.MinSecretLen:
		return c, fmt.Errorf("%w: Secret: %w", ErrInvalidConfig, auth.ErrNoSecret)
	case len(c.Kinds) == 0:
		return c, fmt.Errorf("%w: Kinds: none given", ErrInvalidConfig)
	}
	for _, k := range c.Kinds {
		if err := envelope.ValidateKind(k); err != nil {
			return c, fmt.Errorf("%w: Kinds: %w", ErrInvalidConfig, err)
		}
	}
	origins := make([]string, 0, len(c.CORSOrigins))
	for _, o := range c.CORSOrigins {
		n, err := normalOrigin(o)
		if err != nil {
			return c, fmt.Errorf("%w: CORSOrigins: %w", ErrInvalidConfig, err)
		}
		origins = append(origins, n)
	}
	c.CORSOrigins = origins
	return c, nil
}
