// Command ingest is Beamline's HTTP API for submitting and reading jobs
// (POST /v1/jobs, GET and DELETE /v1/jobs/{id}; see api/openapi.yaml), with
// /metrics, /healthz and /readyz beside it. The token secret is read from
// $BEAMLINE_AUTH_SECRET, never from a flag.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/provider"
)

func main() { config.Main("ingest", run) }

// run serves until ctx is done. Bad flags or configuration are
// config.Invalid (exit 2); a failure of the service is any other error.
func run(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs, common := config.NewFlags("ingest", stderr)
	addr := fs.String("addr", ingest.DefaultAddr, "listen address (API, /metrics, /healthz, /readyz)")
	maxBody := fs.Int64("max-body", ingest.DefaultMaxBody, "largest request body in bytes (larger: 413)")
	maxInFlight := fs.Int("max-inflight", ingest.DefaultMaxInFlight, "submissions handled at once (beyond: 429 with Retry-After)")
	outputsCacheMB := fs.Int64("outputs-cache-mb", ingest.DefaultOutputsCacheBytes>>20, "MiB of recently served output chunks kept in memory, so seeks in a video are not a JetStream round trip each (0: none)")
	maxInFlightHooks := fs.Int("max-inflight-webhooks", ingest.DefaultMaxInFlight, "provider webhooks handled at once, apart from submissions (beyond: 429 with Retry-After; providers retry)")
	timeout := fs.Duration("request-timeout", ingest.DefaultRequestTimeout, "bound on each NATS round trip of a request (beyond: 503)")
	corsOrigins := fs.String("cors-origins", "", "comma-separated browser origins (https://app.example.com) allowed to call the API from another origin; empty: none")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ingest [flags]\n\n"+
			"Serves the Beamline job API: POST /v1/jobs, GET and DELETE /v1/jobs/{id}.\n"+
			"The HS256 token secret (at least %d bytes) is read from $%s.\n"+
			"Provider webhooks (POST /v1/webhooks/replicate, /v1/webhooks/cog/...): Replicate's signing secret\n"+
			"from $%s; the key of Cog webhook tokens from $%s (default: derived from $%s).\n\nFlags:\n",
			auth.MinSecretLen, auth.EnvSecret, provider.EnvReplicateWebhookSecret, provider.EnvWebhookKey, auth.EnvSecret)
		fs.PrintDefaults()
	}
	if err := config.Parse(fs, args); err != nil {
		return err
	}
	secret, err := config.Secret(auth.EnvSecret)
	if err != nil {
		return config.Invalid(fmt.Errorf("refusing to start without a token secret: set $%s (at least %d bytes)", auth.EnvSecret, auth.MinSecretLen))
	}
	if len(secret) < auth.MinSecretLen {
		return config.Invalid(fmt.Errorf("refusing to start: $%s is shorter than %d bytes", auth.EnvSecret, auth.MinSecretLen))
	}
	// The same function as the processor's, so both derive the same key
	// from the auth secret when $BEAMLINE_WEBHOOK_KEY is unset.
	webhookKey, err := provider.WebhookKey(os.Getenv)
	if err != nil {
		return config.Invalid(err)
	}
	replicateSecret := os.Getenv(provider.EnvReplicateWebhookSecret)
	if replicateSecret != "" {
		if _, err := ingest.ParseWebhookSecret(replicateSecret); err != nil {
			return config.Invalid(fmt.Errorf("$%s: %w", provider.EnvReplicateWebhookSecret, err))
		}
	}
	origins, err := ingest.ParseOrigins(*corsOrigins)
	if err != nil {
		return config.Invalid(fmt.Errorf("-cors-origins: %w", err))
	}
	kinds, err := common.ParsedKinds()
	if err != nil {
		return err
	}
	log, err := common.Logger(stderr)
	if err != nil {
		return err
	}

	return common.Serve(ctx, "ingest", log, func(d config.Deps) (config.Service, error) {
		svc, err := ingest.New(ingest.Config{
			Addr:               *addr,
			Kinds:              config.KindNames(kinds),
			Secret:             secret,
			OutputsKey:         []byte(os.Getenv(outputs.EnvKey)),
			MaxBody:            *maxBody,
			MaxInFlight:        *maxInFlight,
			WebhookMaxInFlight: *maxInFlightHooks,
			OutputsCacheBytes:  cacheBytes(*outputsCacheMB),
			RequestTimeout:     *timeout,
			CORSOrigins:        origins,
			TracerProvider:     d.Tracer,

			ReplicateWebhookSecret: replicateSecret,
			WebhookKey:             webhookKey,
		}, d.NC, d.JS, log, d.Registry)
		if err != nil {
			return config.Service{}, err
		}
		return config.Service{Run: svc.Run}, nil
	})
}

// cacheBytes is -outputs-cache-mb as Config.OutputsCacheBytes (whose 0
// means the default, and a negative value none).
func cacheBytes(mb int64) int64 {
	if mb <= 0 {
		return -1
	}
	return mb << 20
}
