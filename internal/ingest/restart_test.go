package ingest

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/freeport"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// TestJobControlSurvivesNATSRestart: with scheduled, batched and cron jobs
// in flight, NATS stops and starts again on the same store: every
// scheduled and batched job ends succeeded exactly once (one succeeded
// event each), and no cron firing makes two jobs.
func TestJobControlSurvivesNATSRestart(t *testing.T) {
	dir := t.TempDir()
	// The server comes back on this port, chosen outside the ephemeral range
	// so that no outgoing connection takes it while NATS is down.
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsx.RunEmbedded(natsx.EmbeddedConfig{Port: port, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	})
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := jsm.ApplyStreams(context.Background(), js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	h := newHarnessOn(t, srv, nc, js, nil)
	h.startProcessor()
	alice := token(t, "alice")

	const n = 40
	sim := `"input":{"sim":{"duration_ms":300,"steps":2}}`
	items := make([]string, 0, 2*n)
	for range n {
		items = append(items, `{"kind":"image","delay_ms":2500,`+sim+`}`, `{"kind":"image",`+sim+`}`)
	}
	b := h.batch(alice, `{"jobs":[`+strings.Join(items, ",")+`]}`).batchAnswer(t)
	if b.Accepted != 2*n {
		t.Fatalf("accepted %d", b.Accepted)
	}
	if r := h.do(http.MethodPost, "/v1/schedules", []byte(`{"name":"tick","every":"1s","job":{"kind":"video",`+sim+`}}`), bearer(alice)); r.Status != http.StatusCreated {
		t.Fatalf("schedule: %d %s", r.Status, r.Body)
	}

	time.Sleep(1200 * time.Millisecond) // batched jobs running, scheduled ones not due
	srv.Shutdown()
	srv.WaitForShutdown()
	stopped = true
	time.Sleep(500 * time.Millisecond)
	srv2, err := natsx.RunEmbedded(natsx.EmbeddedConfig{Port: port, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Shutdown(); srv2.WaitForShutdown() })
	h.srv = srv2

	for _, it := range b.Jobs {
		id := it.Job.ID
		testutil.WaitFor(t, 60*time.Second, func() bool {
			r := h.do(http.MethodGet, "/v1/jobs/"+id, nil, bearer(alice))
			return r.Status == http.StatusOK && r.snapshot(t).Status == envelope.StatusSucceeded
		}, "job ", id, " did not succeed after the restart")
	}
	time.Sleep(2 * time.Second) // a few more firings after the restart
	if r := h.do(http.MethodDelete, "/v1/schedules/tick", nil, bearer(alice)); r.Status != http.StatusNoContent {
		t.Fatalf("delete schedule: %d %s", r.Status, r.Body)
	}

	// Exactly one succeeded event per job.
	ev, err := js.Stream(context.Background(), streams.Events)
	if err != nil {
		t.Fatal(err)
	}
	retried := 0
	for _, it := range b.Jobs {
		succeeded := 0
		c, err := ev.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{envelope.EventSubject("alice", it.Job.ID)}})
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := c.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		attempt := 0
		for m := range msgs.Messages() {
			_, snap, err := envelope.DecodeEvent(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			if snap.Status == envelope.StatusSucceeded {
				succeeded++
			}
			attempt = max(attempt, snap.Attempt)
		}
		if succeeded != 1 {
			t.Errorf("job %s has %d succeeded events", it.Job.ID, succeeded)
		}
		if attempt > 1 {
			retried++
		}
	}
	// No firing doubled: the cron jobs' ids are distinct by construction
	// (one per Nats-Schedule-Next); what must not happen is two jobs for
	// one firing, which would show as more jobs than seconds.
	cron := h.listAll(alice, url.Values{"kind": {"video"}})
	seconds := map[string]int{}
	for _, id := range cron {
		g := h.getSnap(alice, id)
		seconds[g.CreatedAt.Truncate(time.Second).Format(time.RFC3339)]++
	}
	t.Logf("%d scheduled and %d batched jobs ended succeeded once each (%d ran again after the restart); %d cron jobs over %d distinct seconds", n, n, retried, len(cron), len(seconds))
	if len(cron) == 0 {
		t.Fatal("the schedule made no job")
	}
	if len(cron) > len(seconds)+1 {
		t.Errorf("cron: %d jobs in %d seconds: a firing made two jobs", len(cron), len(seconds))
	}
}
