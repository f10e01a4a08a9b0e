package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"), // JOBS sources SCHEDULED (see internal/ingest)
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).StartMonitoring.func1"),
	)
}

// env is a real nats-server with the streams applied and a Store on it.
type env struct {
	t     *testing.T
	nc    *nats.Conn
	js    jetstream.JetStream
	store *jobstore.Store
	url   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv, nc, js := natstest.StartWithStreams(t)
	kv, err := jsm.JobStatus(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, nc: nc, js: js, store: jobstore.New(js, kv, jobstore.Config{Source: "/test"}), url: srv.ClientURL()}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() && os.Getenv("PROCESSOR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// baseConfig is a fast configuration: small backoff and ack wait.
func baseConfig(t *testing.T) Config {
	sim, err := provider.NewSim(provider.SimConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Addr:            "127.0.0.1:0",
		Kinds:           []config.Kind{{Name: "image"}, {Name: "video"}},
		Providers:       map[string]provider.Provider{"sim": sim},
		DefaultProvider: "sim",
		Concurrency:     8,
		AckWait:         2 * time.Second,
		BackoffMin:      20 * time.Millisecond,
		BackoffMax:      200 * time.Millisecond,
		Grace:           5 * time.Second,
		PollWait:        200 * time.Millisecond,
		MetricsInterval: 100 * time.Millisecond,
		// The full lifecycle (running + started for every run); the
		// deferred start has its own tests (started_test.go).
		StartedDelay: -1,
		// The sim's failures are per job, not a sign of an unhealthy
		// provider: keep the breaker out of the way except where tested.
		Breaker: flow.BreakerConfig{MinRequests: math.MaxUint32},
	}
}

// running is a started Processor.
type running struct {
	p      *Processor
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// start runs a Processor on its own connection until stop (or the test end).
func (e *env) start(cfg Config) *running {
	e.t.Helper()
	return e.startWith(cfg, nil)
}

// startWith is start with setup applied to the Processor before Run (to set
// test hooks).
func (e *env) startWith(cfg Config, setup func(*Processor)) *running {
	e.t.Helper()
	nc, err := nats.Connect(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := New(cfg, nc, js, testLogger(e.t), reg)
	if err != nil {
		e.t.Fatal(err)
	}
	if setup != nil {
		setup(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx); nc.Close() }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

var stopOnce sync.Map

// stop shuts the processor down and returns Run's error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	if _, loaded := stopOnce.LoadOrStore(r, true); loaded {
		return nil
	}
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("processor did not stop")
		return nil
	}
}

var jobSeq = struct {
	sync.Mutex
	n int
}{}

// newJob returns a job with a unique id and input {"sim": sim}.
func newJob(user, kind string, prio envelope.Priority, sim map[string]any) envelope.Job {
	jobSeq.Lock()
	jobSeq.n++
	n := jobSeq.n
	jobSeq.Unlock()
	in, _ := json.Marshal(map[string]any{"sim": sim})
	if sim == nil {
		in = nil
	}
	return envelope.Job{
		ID: fmt.Sprintf("j%d-%d", time.Now().UnixNano()%1e6, n), User: user, Kind: kind, Priority: prio,
		Input: in, CreatedAt: time.Now().UTC(),
	}
}

// submit does what ingest does: the queued snapshot, then the job message.
// submit submits j as ingest does: its message in JOBS is its one write
// (no snapshot until the processor's first change).
func (e *env) submit(j envelope.Job) {
	e.t.Helper()
	e.publish(j)
}

// apply changes a job as ingest's cancel does: at the revision Lookup
// reads (RevAbsent for a job nobody has written yet).
func (e *env) apply(ctx context.Context, id string, t envelope.Type, mutate jobstore.Mutation) (envelope.Snapshot, error) {
	snap, rev, err := e.store.Lookup(ctx, id)
	if err != nil {
		return snap, err
	}
	snap, _, err = e.store.ApplyAt(ctx, snap, rev, t, mutate)
	return snap, err
}

// publish sends the job straight to its subject, as any service may.
// cancelStored marks the job cancelled in the store, as ingest's DELETE
// does before it publishes on the cancel subject.
func (e *env) cancelStored(ctx context.Context, id string) (envelope.Snapshot, error) {
	return e.apply(ctx, id, envelope.TypeCancelled, func(s *envelope.Snapshot) error {
		s.Status = envelope.StatusCancelled
		return nil
	})
}

func (e *env) publish(j envelope.Job) {
	e.t.Helper()
	m, err := envelope.NewJobMsg(j, "/test", "")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) snapshot(id string) envelope.Snapshot {
	e.t.Helper()
	s, _, err := e.store.Get(context.Background(), id)
	if err != nil && err != jobstore.ErrNotFound {
		e.t.Fatal(err)
	}
	return s
}

// waitStatus waits until job id reaches status.
func (e *env) waitStatus(id string, st envelope.Status, timeout time.Duration) envelope.Snapshot {
	e.t.Helper()
	var s envelope.Snapshot
	testutil.WaitFor(e.t, timeout, func() bool {
		s = e.snapshot(id)
		return s.Status == st
	}, func() string { return fmt.Sprintf("job %s: status %q, want %q (%+v)", id, s.Status, st, s) })
	return s
}

// events returns the events stored for a job, in order.
func (e *env) events(j envelope.Job) []envelope.Snapshot {
	e.t.Helper()
	ctx := context.Background()
	c, err := e.js.OrderedConsumer(ctx, "EVENTS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{envelope.EventSubject(j.User, j.ID)},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []envelope.Snapshot
	for {
		b, err := c.FetchNoWait(100)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			env, snap, err := envelope.DecodeEvent(m.Data())
			if err != nil {
				e.t.Fatal(err)
			}
			if envelope.EventType(snap.Status) != env.Type && env.Type != envelope.TypeProgress {
				e.t.Fatalf("event type %s with status %s", env.Type, snap.Status)
			}
			out = append(out, snap)
		}
		if n == 0 {
			return out
		}
	}
}

// lastDLQ waits for the last DLQ message on subject and returns it. A dead
// job's DLQ copy is stored after its dead snapshot (then the message is
// termed), so a test that saw the snapshot must wait for the copy.
func (e *env) lastDLQ(subject string) *jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	var m *jetstream.RawStreamMsg
	testutil.WaitFor(e.t, 5*time.Second, func() bool {
		dlq, err := e.js.Stream(ctx, "DLQ")
		if err != nil {
			return false
		}
		m, err = dlq.GetLastMsgForSubject(ctx, subject)
		return err == nil
	})
	return m
}
