package processor

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// countingHandler counts the records whose message contains substr.
type countingHandler struct {
	slog.Handler
	substr string
	n      *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.substr, h.n}
}

func (h countingHandler) WithGroup(g string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(g), h.substr, h.n}
}

// A processor started before JetStream is ready (here: no streams at all,
// as on a fresh cluster before ApplyStreams or leader election) keeps
// retrying its setup instead of exiting, and serves once the streams exist.
func TestRunWaitsForJetStream(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, nc: nc, js: js, url: srv.ClientURL()}
	var retries atomic.Int64
	r := e.startWith(baseConfig(t), func(p *Processor) {
		p.log = slog.New(countingHandler{testLogger(t).Handler(), "retrying setup", &retries})
	})
	testutil.WaitFor(t, 20*time.Second, func() bool { return retries.Load() >= 3 })
	select {
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run returned before JetStream was ready: %v", err)
	default:
	}

	ctx := context.Background()
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	kv, err := jsm.JobStatus(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	e.store = jobstore.New(js, kv, jobstore.Config{Source: "/test"})
	j := newJob("alice", "image", envelope.PriorityHigh, map[string]any{"duration_ms": 5})
	e.submit(j)
	e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// Stopped while still waiting for JetStream: Run returns nil promptly.
func TestRunStopsWhileWaitingForJetStream(t *testing.T) {
	srv := natstest.Start(t)
	e := &env{t: t, url: srv.ClientURL()}
	var retries atomic.Int64
	r := e.startWith(baseConfig(t), func(p *Processor) {
		p.log = slog.New(countingHandler{testLogger(t).Handler(), "retrying setup", &retries})
	})
	testutil.WaitFor(t, 20*time.Second, func() bool { return retries.Load() >= 1 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
