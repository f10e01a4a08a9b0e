package devstack_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/streams"
)

// The dashboard's queue figures are the consumers' own: what waits in the
// stream (num_pending), what processors hold (num_ack_pending) and what
// runs (issue 16, item 5: it showed 0-1 while processors held 345).
func TestDashboardQueueFiguresAreTheConsumers(t *testing.T) {
	st := devstacktest.Start(t, func(c *devstack.Config) {
		c.Grace = 200 * time.Millisecond // the jobs below would hold Close
		c.Tune.Processor = func(pc *processor.Config) {
			pc.Concurrency = 2
			pc.MetricsInterval = 200 * time.Millisecond
		}
	})
	const jobs = 12
	for range jobs {
		devstacktest.Submit(t, st.IngestURL, st.Token, `{"kind":"image","input":{"sim":{"steps":2,"duration_ms":120000}}}`, nil)
	}

	nc, err := nats.Connect(st.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// consumersNow sums the processors' consumers by priority.
	consumersNow := func() (pending, ackPending telemetry.QueueDepth) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := js.Stream(ctx, streams.Jobs)
		if err != nil {
			t.Fatal(err)
		}
		lister := stream.ListConsumers(ctx)
		for info := range lister.Info() {
			rest, ok := strings.CutPrefix(info.Name, "proc-")
			if !ok {
				continue
			}
			add := func(q *telemetry.QueueDepth, n int64) {
				switch {
				case strings.HasPrefix(rest, "high-"):
					q.High += n
				case strings.HasPrefix(rest, "normal-"):
					q.Normal += n
				case strings.HasPrefix(rest, "low-"):
					q.Low += n
				}
			}
			add(&pending, int64(info.NumPending))
			add(&ackPending, int64(info.NumAckPending))
		}
		if err := lister.Err(); err != nil {
			t.Fatal(err)
		}
		return pending, ackPending
	}

	var (
		mu   sync.Mutex
		last telemetry.AdminMetrics
		got  bool
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := phoenixtest.Dial(ctx, phoenixtest.URL(st.NotifierURL, st.AdminToken), phoenixtest.Options{
		OnFrame: func(f *phoenixtest.Frame, _ time.Time) {
			if f.Topic != telemetry.AdminTopic || f.Event != telemetry.AdminEvent {
				return
			}
			var m telemetry.AdminMetrics
			if json.Unmarshal(f.Payload, &m) == nil {
				mu.Lock()
				last, got = m, true
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.JoinOK(ctx, telemetry.AdminTopic, nil); err != nil {
		t.Fatal(err)
	}

	var figures telemetry.AdminMetrics
	var pending, ackPending telemetry.QueueDepth
	testutil.WaitFor(t, 30*time.Second, func() bool {
		pending, ackPending = consumersNow()
		mu.Lock()
		figures, ok := last, got
		mu.Unlock()
		return ok && figures.QueueDepth == pending && figures.Held == ackPending &&
			figures.Inflight == 2 && pending.Normal+ackPending.Normal == jobs
	}, func() string {
		mu.Lock()
		defer mu.Unlock()
		return "figures " + toJSON(last) + " vs consumers pending " + toJSON(pending) + " ack pending " + toJSON(ackPending)
	})
	mu.Lock()
	figures = last
	mu.Unlock()
	t.Logf("dashboard: waiting %d, held %d, running %d (consumers: num_pending %d, num_ack_pending %d)",
		figures.QueueDepth.Normal, figures.Held.Normal, figures.Inflight, pending.Normal, ackPending.Normal)
	if ackPending.Normal <= figures.Inflight {
		t.Errorf("processors hold %d, run %d: the test wants jobs held but not running", ackPending.Normal, figures.Inflight)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
