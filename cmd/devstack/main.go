// Command devstack runs the whole Beamline pipeline in one process on an
// embedded nats-server: the one command for a laptop.
//
//	go run ./cmd/devstack
//
// It prints one line when ready, with the URLs and a dev token, followed by
// a curl example. Ctrl-C or SIGTERM stops it cleanly; starting it again on
// the same -data finishes what was queued.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/notifier"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/telemetry"
)

func main() { config.Main("devstack", run) }

// A laptop's defaults: Ctrl-C waits a few seconds, not the processor's 25,
// and a hanging sim job fails after a minute, not ten.
const (
	defaultGrace      = 5 * time.Second
	defaultJobTimeout = time.Minute
)

// run serves the stack until ctx is done. Bad flags are config.Invalid
// (exit 2); a failure of the stack is any other error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dataDir      = fs.String("data", "./data", "JetStream storage folder")
		natsPort     = fs.Int("nats-port", natsx.DefaultPort, "embedded NATS client port on 127.0.0.1 (-1: any free port)")
		ingestAddr   = fs.String("ingest-addr", ingest.DefaultAddr, "ingest HTTP address")
		notifierAddr = fs.String("notifier-addr", notifier.DefaultAddr, "notifier HTTP/WebSocket address")
		procAddr     = fs.String("processor-addr", processor.DefaultAddr, "processor /metrics, /healthz, /readyz address")
		secret       = fs.String("auth-secret", "", "token secret, dev only (default: $"+auth.EnvSecret+", else the one kept in <data>/"+devstack.SecretFile+", made on the first start)")
		grace        = fs.Duration("grace", defaultGrace, "how long running jobs may finish after Ctrl-C (a second Ctrl-C stops at once; the jobs are redelivered on the next start)")
		jobTimeout   = fs.Duration("job-timeout", defaultJobTimeout, "timeout of one provider call (a sim job with hang_times hangs this long)")
		logFormat    = fs.String("log-format", "text", "log format: text or json")
		kinds        = fs.String("kinds", config.DefaultKinds, "job kinds, served by the sim provider unless named: image,video=cog,audio=replicate:owner/name")
		cogURLs      = fs.String("cog-url", "", "Cog servers for kinds served by cog, URL[,URL...] (default "+provider.DefaultCogURL+")")
		replicateURL = fs.String("replicate-url", provider.DefaultReplicateURL, "Replicate API base for kinds served by replicate:<model> (token from $"+provider.EnvReplicateToken+")")
		webhookURL   = fs.String("webhook-url", "", "base URL Cog and Replicate send webhooks to (default: this stack's ingest; none: no webhooks; a Cog container reaches the host as http://host.docker.internal:8080 on Docker Desktop)")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./cmd/devstack [flags]\n\nRuns NATS (embedded), ingest, processor (sim provider) and notifier in one process.\n\n")
		fs.PrintDefaults()
	}
	if err := config.Parse(fs, args); err != nil {
		return err
	}
	log, err := telemetry.NewLogger(*logFormat, stderr, slog.LevelInfo)
	if err != nil {
		return config.Invalid(err)
	}
	ks, err := config.ParseKinds(*kinds)
	if err != nil {
		return err
	}
	key := []byte(*secret)
	if len(key) == 0 {
		key = []byte(os.Getenv(auth.EnvSecret))
	}
	if *grace < 0 || *jobTimeout < 0 {
		return config.Invalid(fmt.Errorf("-grace and -job-timeout must not be negative"))
	}
	if len(key) == 0 {
		log.Info("tokens are signed with the dev secret kept in the data folder; they stay valid across restarts",
			"file", filepath.Join(*dataDir, devstack.SecretFile))
	}

	// Off unless the standard OTEL_EXPORTER_OTLP_* variables are set.
	shutdownTracing, err := telemetry.SetupTracing(ctx, "beamline-devstack")
	if err != nil {
		return config.Invalid(err)
	}
	defer func() { _ = shutdownTracing(context.Background()) }()
	stack, err := devstack.Start(ctx, devstack.Config{
		DataDir:       *dataDir,
		NATSPort:      *natsPort,
		IngestAddr:    *ingestAddr,
		NotifierAddr:  *notifierAddr,
		ProcessorAddr: *procAddr,
		Secret:        key, // empty: the one kept in DataDir
		Grace:         *grace,
		JobTimeout:    *jobTimeout,
		Kinds:         ks,
		CogURLs:       provider.ParseCogURLs(*cogURLs),
		Replicate:     provider.ReplicateConfig{URL: *replicateURL, Token: os.Getenv(provider.EnvReplicateToken)},
		WebhookURL:    *webhookURL,

		ReplicateWebhookSecret: os.Getenv(provider.EnvReplicateWebhookSecret),
		Logger:                 log,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "beamline devstack ready: ingest=%s notifier=%s nats=%s processor=%s token=%s\n",
		stack.IngestURL, stack.NotifierURL, stack.NATSURL, stack.ProcessorURL, stack.Token)
	fmt.Fprintf(stdout, `
  demo page:   %[2]s/#token=%[3]s
  dashboard:   %[2]s/admin#token=%[4]s
  submit a job:
    curl -s -X POST %[1]s/v1/jobs -H "Authorization: Bearer %[3]s" -H 'Content-Type: application/json' \
      -d '{"kind":"image","input":{"prompt":"a lighthouse","sim":{"steps":3,"duration_ms":1500}}}'
  read it:
    curl -s %[1]s/v1/jobs/<id> -H "Authorization: Bearer %[3]s"
  inspect:     nats -s %[5]s stream ls
  (dev tokens only: in production the host application issues tokens)
`, stack.IngestURL, stack.NotifierURL, stack.Token, stack.AdminToken, stack.NATSURL)

	select {
	case <-ctx.Done():
		log.Info("shutting down (Ctrl-C again to stop at once)")
	case <-stack.Failed():
		log.Error("a service stopped; shutting down", "err", stack.Err())
	}
	cerr := stack.Close()
	if err := stack.Err(); err != nil {
		return err
	}
	return cerr
}
