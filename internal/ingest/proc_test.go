package ingest

import (
	"context"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/flow"
)

// startProcessor runs a real processor (sim provider) on its own
// connection to h's server until the test ends, for tests where a job must
// run.
func (h *harness) startProcessor() {
	t := h.t
	t.Helper()
	sim, err := provider.NewSim(provider.SimConfig{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(h.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	cfg := processor.Config{
		Addr:            "127.0.0.1:0",
		Kinds:           []config.Kind{{Name: "image"}, {Name: "video"}},
		Providers:       map[string]provider.Provider{"sim": sim},
		DefaultProvider: "sim",
		Concurrency:     8,
		AckWait:         2 * time.Second,
		MaxDeliver:      2,
		BackoffMin:      20 * time.Millisecond,
		BackoffMax:      100 * time.Millisecond,
		Grace:           5 * time.Second,
		PollWait:        100 * time.Millisecond,
		MetricsInterval: time.Second,
		StartedDelay:    -1,
		Breaker:         flow.BreakerConfig{MinRequests: math.MaxUint32},
	}
	p, err := processor.New(cfg, nc, js, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("processor: %v", err)
		}
		nc.Close()
	})
}
