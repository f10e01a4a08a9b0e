package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/streams"
)

// target is the system under test: a devstack started in-process, or
// running binaries reached by URL.
type target struct {
	ingestURL, notifierURL, natsURL string
	secret                          []byte
	stack                           *devstack.Stack // nil against running binaries
	dataDir                         string

	nc    *nats.Conn
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	store *jobstore.Store
	http  *http.Client
	log   *slog.Logger
}

// startTarget starts devstack in a temporary folder unless o names running
// services.
func startTarget(ctx context.Context, o *options, log *slog.Logger) (*target, error) {
	t := &target{log: log}
	if o.ingestURL != "" || o.notifierURL != "" || o.natsURL != "" {
		if o.ingestURL == "" || o.notifierURL == "" || o.natsURL == "" {
			return nil, errors.New("-ingest, -notifier and -nats go together")
		}
		secret := os.Getenv(auth.EnvSecret)
		if len(secret) < auth.MinSecretLen {
			return nil, fmt.Errorf("$%s must hold the services' token secret (≥ %d bytes)", auth.EnvSecret, auth.MinSecretLen)
		}
		t.ingestURL, t.notifierURL, t.natsURL = strings.TrimRight(o.ingestURL, "/"), strings.TrimRight(o.notifierURL, "/"), o.natsURL
		t.secret = []byte(secret)
	} else {
		dir, err := os.MkdirTemp("", "beambench-*")
		if err != nil {
			return nil, err
		}
		t.dataDir = dir
		t.secret = []byte("beambench-secret-0123456789abcdef")
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		if o.verbose {
			quiet = log
		}
		st, err := devstack.Start(ctx, devstack.Config{
			DataDir: dir, NATSPort: -1,
			IngestAddr: "127.0.0.1:0", NotifierAddr: "127.0.0.1:0", ProcessorAddr: "127.0.0.1:0",
			Secret: t.secret, Logger: quiet,
			// Replicate's webhooks reach ingest (the providers scenario).
			ReplicateWebhookSecret: replicatefake.DefaultWebhookSecret,
			Tune: devstack.Tuning{Processor: func(c *processor.Config) {
				c.Concurrency = o.procConcurrency
				c.MaxPerUser = o.procConcurrency
				c.PollWait = 200 * time.Millisecond
			}},
		})
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		t.stack = st
		t.ingestURL, t.notifierURL, t.natsURL = st.IngestURL, st.NotifierURL, st.NATSURL
	}
	var err error
	if t.nc, err = nats.Connect(t.natsURL, nats.Name("beambench"), nats.MaxReconnects(-1)); err != nil {
		t.close()
		return nil, err
	}
	if t.js, err = jetstream.New(t.nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		t.close()
		return nil, err
	}
	if t.kv, err = jsm.JobStatus(ctx, t.js); err != nil {
		t.close()
		return nil, err
	}
	t.store = jobstore.New(t.js, t.kv, jobstore.Config{Source: "/beamline/beambench"})
	t.http = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 30 * time.Second,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
	}
	return t, nil
}

func (t *target) close() {
	if t.http != nil {
		t.http.CloseIdleConnections()
	}
	if t.nc != nil {
		t.nc.Close()
	}
	if t.stack != nil {
		if err := t.stack.Close(); err != nil {
			t.log.Warn("devstack close", "err", err)
		}
	}
	if t.dataDir != "" {
		os.RemoveAll(t.dataDir)
	}
}

// token is a bearer token for user.
func (t *target) token(user string) string {
	tok, err := auth.Issue(t.secret, user, false, 24*time.Hour)
	if err != nil {
		panic(err) // the secret was validated at start
	}
	return tok
}

// pauseProcessor stops the in-process processor and returns how to start it
// again; against running binaries it does nothing and reports false.
func (t *target) pauseProcessor() (resume func(context.Context) error, ok bool) {
	if t.stack == nil {
		return func(context.Context) error { return nil }, false
	}
	if err := t.stack.StopService("processor"); err != nil {
		t.log.Warn("stop processor", "err", err)
	}
	return func(ctx context.Context) error { return t.stack.StartService(ctx, "processor") }, true
}

// purge removes what a scenario left in the JOBS stream on subject.
func (t *target) purge(ctx context.Context, subject string) {
	s, err := t.js.Stream(ctx, streams.Jobs)
	if err == nil {
		err = s.Purge(ctx, jetstream.WithPurgeSubject(subject))
	}
	if err != nil {
		t.log.Warn("purge", "subject", subject, "err", err)
	}
}
