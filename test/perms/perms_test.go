// Package perms shows that the committed nats.conf gives each Beamline
// service exactly what it needs: each service's real code runs with its own
// NATS user through a whole workflow (submit, process, retry, dead-letter,
// cancel, push, replay) without one permission violation, and then the
// actions outside each role fail.
package perms

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
	"github.com/beamline/beamline/test/chaos/kit"
)

// pipeline is the three services, each on its own user.
type pipeline struct {
	natsURL                string
	ingestURL, notifierURL string
	ingest, processor      *client
	notifier, admin        *client
	token                  string
}

func startPipeline(t *testing.T) *pipeline {
	t.Helper()
	s := startServer(t)
	p := &pipeline{
		natsURL:   s.ClientURL(),
		ingest:    connect(t, s, "ingest"),
		processor: connect(t, s, "processor"),
		notifier:  connect(t, s, "notifier"),
		admin:     connect(t, s, "admin"),
	}
	// Each binary applies streams/ at start with its own user; the first
	// creates, the others update.
	p.notifier.applyStreams(t)
	p.ingest.applyStreams(t)
	p.processor.applyStreams(t)
	p.notifierURL = startNotifier(t, p.notifier)
	startProcessor(t, p.processor)
	p.ingestURL = startIngest(t, p.ingest)
	tok, err := auth.Issue(secret, "alice", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p.token = tok
	return p
}

func (p *pipeline) noViolations(t *testing.T) {
	t.Helper()
	for _, c := range []*client{p.ingest, p.processor, p.notifier} {
		if v := c.rec.violations(); len(v) > 0 {
			t.Errorf("%s hit permission violations doing its own job (nats.conf too narrow): %v", c.user, v)
		}
	}
}

// TestEachServiceWorksWithItsOwnUser runs the whole workflow with least
// privilege and checks no service was refused anything.
func TestEachServiceWorksWithItsOwnUser(t *testing.T) {
	p := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	ws, _, err := kit.Dial(ctx, p.notifierURL, p.token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	r, err := ws.Join(ctx, "user:alice", map[string]any{"last_seq": 0})
	if err != nil || r.Status != "ok" {
		t.Fatalf("join user:alice: %v %s %s (notifier violations %v)", err, r.Status, r.Response, p.notifier.rec.violations())
	}

	hc := &http.Client{Timeout: 10 * time.Second}
	submit := func(sim map[string]any) string {
		t.Helper()
		sub, err := kit.Submit(ctx, hc, p.ingestURL, p.token, "", kit.SimJob("image", sim))
		if err != nil || sub.Status != http.StatusAccepted {
			t.Fatalf("submit: %v %d %s (ingest violations %v)", err, sub.Status, sub.Body, p.ingest.rec.violations())
		}
		return sub.Snapshot.ID
	}
	ok := submit(map[string]any{"steps": 2, "fail_times": 1, "duration_ms": 20})
	dead := submit(map[string]any{"fail_times": 50})
	long := submit(map[string]any{"duration_ms": 60000})

	// Read pushes until each job reached the status we expect.
	want := map[string]envelope.Status{ok: envelope.StatusSucceeded, dead: envelope.StatusDead, long: envelope.StatusCancelled}
	got := map[string]envelope.Status{}
	cancelled := false
	for len(got) < len(want) {
		select {
		case f := <-ws.Pushes:
			if f.Event != "job" {
				continue
			}
			var ev kit.JobEvent
			if err := json.Unmarshal(f.Payload, &ev); err != nil {
				t.Fatal(err)
			}
			id, st := ev.Job.ID, ev.Job.Status
			if id == long && st == envelope.StatusRunning && !cancelled {
				cancelled = true
				p.cancelJob(t, ctx, hc, long)
			}
			if st.Terminal() {
				if st != want[id] {
					t.Fatalf("job %s ended %s, want %s", id, st, want[id])
				}
				got[id] = st
			}
		case <-ws.Done():
			t.Fatalf("notifier closed the socket: %v", ws.Err())
		case <-ctx.Done():
			p.noViolations(t)
			t.Fatalf("jobs did not finish: got %v of %v", got, want)
		}
	}
	// GET through ingest reads the KV with ingest's user.
	code, snap, err := kit.Get(ctx, hc, p.ingestURL, p.token, ok)
	if err != nil || code != http.StatusOK || snap.Status != envelope.StatusSucceeded || snap.Attempt != 2 {
		t.Fatalf("GET %s: %d %+v %v", ok, code, snap, err)
	}
	// The dead job is on the DLQ (read as admin; of the services only
	// ingest may read it, for GET /v1/admin/dlq).
	dlq, err := p.admin.js.Stream(ctx, streams.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dlq.GetLastMsgForSubject(ctx, envelope.DLQSubject("image")); err != nil {
		t.Fatalf("dead job not on DLQ: %v", err)
	}
	// An operator reads it with the real nats CLI (issue 3): the original
	// envelope, the reason and the attempt count.
	view := natstest.NewCLI(t, p.natsURL, "--user", "admin", "--password", passwords["admin"]).
		RunTTY(t, "stream", "view", streams.DLQ, "25", "--subject", envelope.DLQSubject("image"))
	for _, want := range []string{dead, "Beamline-Dead-Reason", "Beamline-Attempts"} {
		if !strings.Contains(view, want) {
			t.Errorf("nats stream view DLQ does not show %q:\n%s", want, view)
		}
	}
	// Replay through a new socket: the notifier reads EVENTS with its user.
	ws2, _, err := kit.Dial(ctx, p.notifierURL, p.token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	if r, err := ws2.Join(ctx, "job:"+ok, map[string]any{"last_seq": 0}); err != nil || r.Status != "ok" {
		t.Fatalf("join job:%s with replay: %v %+v", ok, err, r)
	}
	replayed := 0
	for replayed == 0 || len(ws2.Pushes) > 0 {
		select {
		case <-ws2.Pushes:
			replayed++
		case <-time.After(2 * time.Second):
			t.Fatalf("no replay (notifier violations %v)", p.notifier.rec.violations())
		}
	}
	// What the processor does on a redelivery after a crash, with its user:
	// confirm the job's last event is in EVENTS, check the DLQ marker.
	kv, err := p.processor.js.KeyValue(ctx, streams.JobStatus)
	if err != nil {
		t.Fatal(err)
	}
	store := jobstore.New(p.processor.js, kv, jobstore.Config{Source: "/perms"})
	for _, id := range []string{ok, dead} {
		snap, _, err := store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.EnsurePublished(ctx, snap); err != nil {
			t.Errorf("processor user: EnsurePublished(%s): %v", id, err)
		}
	}
	if done, err := store.DeadLettered(ctx, dead); err != nil || !done {
		t.Errorf("processor user: DeadLettered(%s) = %v, %v", dead, done, err)
	}
	// Let the processor's metrics loop and heartbeats run once more.
	time.Sleep(500 * time.Millisecond)
	p.noViolations(t)
}

func (p *pipeline) cancelJob(t *testing.T, ctx context.Context, hc *http.Client, id string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, p.ingestURL+"/v1/jobs/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("DELETE %s: %d (ingest violations %v)", id, resp.StatusCode, p.ingest.rec.violations())
	}
}

// jsCall runs a JetStream API call that must be refused; a refused publish
// gets no answer, so the call ends by its deadline or an error.
func jsCall(t *testing.T, c *client, what string, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := fn(ctx); err == nil {
		t.Errorf("%s could %s", c.user, what)
	}
}

// refusedPublish publishes on subject as c and waits for the server's
// permission violation.
func refusedPublish(t *testing.T, c *client, subject string) {
	t.Helper()
	if err := c.nc.Publish(subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	_ = c.nc.Flush()
	c.rec.waitViolation(t, "Publish", subject)
}

// refusedSubscribe subscribes to subject as c and waits for the violation.
func refusedSubscribe(t *testing.T, c *client, subject string) {
	t.Helper()
	sub, err := c.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = c.nc.Flush()
	c.rec.waitViolation(t, "Subscription", subject)
}

// TestForbiddenActionsFail checks each role's boundary: what another
// service does, reading what it has no business reading, and destroying
// anything, are refused by the server.
func TestForbiddenActionsFail(t *testing.T) {
	s := startServer(t)
	admin := connect(t, s, "admin")
	admin.applyStreams(t)
	ctx := context.Background()
	if _, err := jsm.ApplyConsumer(ctx, admin.js, envelope.PriorityNormal, "image", nil); err != nil {
		t.Fatal(err)
	}
	ingestC, proc, notif := connect(t, s, "ingest"), connect(t, s, "processor"), connect(t, s, "notifier")

	// Destroying or reconfiguring consumers is the admin's alone.
	for _, c := range []*client{ingestC, proc, notif} {
		t.Run(c.user+"/destroy", func(t *testing.T) {
			jsCall(t, c, "delete the JOBS stream", func(ctx context.Context) error { return c.js.DeleteStream(ctx, streams.Jobs) })
			jsCall(t, c, "delete EVENTS", func(ctx context.Context) error { return c.js.DeleteStream(ctx, streams.Events) })
			jsCall(t, c, "purge JOBS", func(ctx context.Context) error {
				st, err := c.js.Stream(ctx, streams.Jobs)
				if err != nil {
					t.Fatalf("%s cannot even look at JOBS: %v", c.user, err)
				}
				return st.Purge(ctx)
			})
			jsCall(t, c, "delete the processor's consumer", func(ctx context.Context) error {
				return c.js.DeleteConsumer(ctx, streams.Jobs, jsm.ConsumerName(envelope.PriorityNormal, "image"))
			})
			// Ingest reads the DLQ for GET /v1/admin/dlq (admin tokens
			// only, checked by ingest); no other service may.
			if c != ingestC {
				jsCall(t, c, "read DLQ", func(ctx context.Context) error {
					_, err := c.nc.Request("$JS.API.DIRECT.GET."+streams.DLQ, []byte(`{"seq":1}`), 500*time.Millisecond)
					return err
				})
			}
			refusedSubscribe(t, c, ">")
			// Replies are private: not the shared _INBOX, not another
			// service's inbox.
			refusedSubscribe(t, c, "_INBOX.>")
			for _, other := range []*client{ingestC, proc, notif} {
				if other != c {
					refusedSubscribe(t, c, natsx.InboxPrefix(other.user)+".>")
				}
			}
		})
	}

	t.Run("notifier", func(t *testing.T) {
		// It may cancel (a client's cancel push: the KV, the event, the
		// notice), nothing else.
		for _, subj := range []string{"jobs.normal.image", "jobs.normal.image.j1", "dlq.image", "$KV.job_handles.j1"} {
			refusedPublish(t, notif, subj)
		}
		jsCall(t, notif, "pull jobs", func(ctx context.Context) error {
			_, err := notif.nc.Request("$JS.API.CONSUMER.MSG.NEXT.JOBS.proc-normal-image", []byte(`{"batch":1,"no_wait":true}`), 500*time.Millisecond)
			return err
		})
		refusedSubscribe(t, notif, "jobs.>")
		refusedSubscribe(t, notif, "cancel.*.*")
	})

	// Only notifiers speak presence and studio messages.
	for _, c := range []*client{ingestC, proc} {
		refusedPublish(t, c, "beamline.presence.n1")
		refusedPublish(t, c, "beamline.studio.lab")
		refusedSubscribe(t, c, "beamline.presence.*")
	}

	t.Run("ingest", func(t *testing.T) {
		jsCall(t, ingestC, "create a consumer on EVENTS", func(ctx context.Context) error {
			_, err := ingestC.js.CreateConsumer(ctx, streams.Events, jetstream.ConsumerConfig{Name: "snoop"})
			return err
		})
		jsCall(t, ingestC, "read EVENTS with an ordered consumer", func(ctx context.Context) error {
			_, err := ingestC.js.OrderedConsumer(ctx, streams.Events, jetstream.OrderedConsumerConfig{})
			return err
		})
		jsCall(t, ingestC, "direct-get EVENTS", func(ctx context.Context) error {
			_, err := ingestC.nc.Request("$JS.API.DIRECT.GET."+streams.Events, []byte(`{"seq":1}`), 500*time.Millisecond)
			return err
		})
		jsCall(t, ingestC, "create a consumer on JOBS", func(ctx context.Context) error {
			_, err := ingestC.js.CreateConsumer(ctx, streams.Jobs, jetstream.ConsumerConfig{Name: "steal", FilterSubject: "jobs.low.video"})
			return err
		})
		jsCall(t, ingestC, "pull jobs", func(ctx context.Context) error {
			_, err := ingestC.nc.Request("$JS.API.CONSUMER.MSG.NEXT.JOBS.proc-normal-image", []byte(`{"batch":1,"no_wait":true}`), 500*time.Millisecond)
			return err
		})
		refusedSubscribe(t, ingestC, "events.>")
		refusedSubscribe(t, ingestC, "jobs.*.*")
		refusedSubscribe(t, ingestC, "jobs.*.*.*")
		refusedPublish(t, ingestC, "dlq.image")
		refusedPublish(t, ingestC, "jobs.normal.image") // only job subjects, jobs.<priority>.<kind>.<job>
		refusedPublish(t, ingestC, "jobs.normal.image."+envelope.QueueToken)
	})

	t.Run("processor", func(t *testing.T) {
		refusedSubscribe(t, proc, "events.>")
		refusedSubscribe(t, proc, "beamline.metrics.>")
		refusedPublish(t, proc, "jobs.high.image")
		refusedPublish(t, proc, "jobs.high.image.j1")
		refusedPublish(t, proc, "cancel.alice.j1")
		jsCall(t, proc, "create a consumer on EVENTS", func(ctx context.Context) error {
			_, err := proc.js.OrderedConsumer(ctx, streams.Events, jetstream.OrderedConsumerConfig{})
			return err
		})
		jsCall(t, proc, "direct-get EVENTS", func(ctx context.Context) error {
			_, err := proc.nc.Request("$JS.API.DIRECT.GET."+streams.Events, []byte(`{"seq":1}`), 500*time.Millisecond)
			return err
		})
	})

	// Control: the same calls as admin succeed, so the refusals above are
	// permissions and not a broken harness.
	t.Run("admin-control", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := admin.js.OrderedConsumer(cctx, streams.Events, jetstream.OrderedConsumerConfig{}); err != nil {
			t.Errorf("admin ordered consumer on EVENTS: %v", err)
		}
		if err := admin.nc.Publish("events.alice.j1", []byte("{}")); err != nil {
			t.Fatal(err)
		}
		_ = admin.nc.Flush()
		if v := admin.rec.violations(); len(v) > 0 {
			t.Errorf("admin refused: %v", v)
		}
	})
}
