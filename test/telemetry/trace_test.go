package telemetry_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/notifier"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// One job's spans from ingest, the processor and the notifier share the
// trace id of the submission's traceparent, and so do the traceparent
// headers of its event messages.
func TestOneTraceAcrossServices(t *testing.T) {
	exp, tp := testutil.Tracing(t)
	st := start(t, func(c *devstack.Config) {
		proc := c.Tune.Processor
		c.Tune.Ingest = func(c *ingest.Config) { c.TracerProvider = tp }
		c.Tune.Processor = func(c *processor.Config) { proc(c); c.TracerProvider = tp }
		c.Tune.Notifier = func(c *notifier.Config) { c.TracerProvider = tp }
	})

	// Every event message, as published.
	nc, err := nats.Connect(st.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var events []*nats.Msg
	sub, err := nc.Subscribe("events.>", func(m *nats.Msg) { mu.Lock(); events = append(events, m); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// A browser watching the user's jobs, so every event is pushed live.
	c := dial(t, st, st.Token)
	if s, _ := c.join("user:dev"); s != "ok" {
		t.Fatalf("join: %s", s)
	}

	parent := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	want := telemetry.SpanContextOf(parent).TraceID()
	job := submit(t, st, `{"kind":"image","input":{"sim":{"steps":2,"fail_times":1}}}`, http.Header{"Traceparent": {parent}})
	if s := waitTerminal(t, st, job.ID); s.Status != envelope.StatusSucceeded {
		t.Fatalf("job ended %s", s.Status)
	}

	// started, progress×2, succeeded on the second attempt: at least
	// started, retrying, started, succeeded.
	testutil.WaitFor(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) >= 4
	})
	mu.Lock()
	for _, m := range events {
		tpH := m.Header.Get(envelope.HeaderTraceparent)
		if got := telemetry.SpanContextOf(tpH).TraceID(); got != want {
			t.Errorf("event %s (%s) traceparent %q: trace %s, want %s", m.Subject, m.Header.Get(envelope.HeaderMsgID), tpH, got, want)
		}
	}
	mu.Unlock()

	// Spans from the three services, all in the submission's trace; the
	// notifier's pushes end once the frames are written, and an attempt's
	// span once its run has acked, after the terminal state is readable:
	// wait for both attempts' spans.
	names := []string{"ingest submit", "processor attempt", "provider call", "job store write", "notifier push"}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		seen := map[string]int{}
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == want {
				seen[s.Name]++
			}
		}
		for _, n := range names {
			if seen[n] == 0 {
				return false
			}
		}
		return seen["processor attempt"] >= 2
	}, "every service's spans and both attempts' in the trace")
	attempts := 0
	for _, s := range exp.GetSpans() {
		if s.Name == "processor attempt" && s.SpanContext.TraceID() == want {
			attempts++
		}
		if s.Name == "ingest submit" && s.Parent.SpanID() != telemetry.SpanContextOf(parent).SpanID() {
			t.Errorf("ingest span's parent %s, want the caller's", s.Parent.SpanID())
		}
	}
	if attempts != 2 {
		t.Errorf("%d attempt spans in the trace, want 2 (one retry)", attempts)
	}
}
