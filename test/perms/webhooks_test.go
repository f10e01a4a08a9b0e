package perms

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/test/chaos/kit"
)

// TestWebhooksWithLeastPrivilege: ingest applies WEBHOOKS and stores a
// verified webhook there; the processor applies it, reads it with its one
// ordered consumer and by direct get; each with its own user, without one
// violation. Then the boundaries: only ingest publishes deliveries, ingest
// does not read them, the notifier touches nothing of them.
func TestWebhooksWithLeastPrivilege(t *testing.T) {
	s := startServer(t)
	ing, proc := connect(t, s, "ingest"), connect(t, s, "processor")
	ing.applyStreams(t)
	proc.applyStreams(t)
	key := []byte("perms-webhook-key-0123")

	ln := kit.Listen(t)
	// "held" is served by no processor: its job stays queued, so the
	// webhook is about a live job and is stored, not dropped.
	svc, err := ingest.New(ingest.Config{Listener: ln, Kinds: []string{"image", "held"}, Secret: secret, WebhookKey: key}, ing.nc, ing.js, nil, nil)
	if err != nil {
		t.Fatalf("ingest.New as ingest: %v (violations %v)", err, ing.rec.violations())
	}
	kit.Run(t, "ingest", svc.Run)
	ingestURL := "http://" + ln.Addr().String()

	hooks, err := processor.NewWebhooks(ingestURL, key)
	if err != nil {
		t.Fatal(err)
	}
	p, err := processor.New(kit.SimProcessorConfig(t, processor.Config{
		Grace: time.Second, PollWait: 200 * time.Millisecond, Webhooks: hooks,
	}), proc.nc, proc.js, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	kit.Run(t, "processor", p.Run)

	tok, err := auth.Issue(secret, "alice", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, ingestURL+"/v1/jobs", bytes.NewReader([]byte(`{"kind":"held","input":{}}`)))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var snap envelope.Snapshot
	_ = json.NewDecoder(resp.Body).Decode(&snap)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit = %d", resp.StatusCode)
	}

	c, stop := hooks.Watch(envelope.WebhookCog, snap.ID)
	defer stop()
	body := []byte(`{"id":"` + provider.CogPredictionID(snap.ID, 1) + `","status":"succeeded","output":"x"}`)
	resp, err = http.Post(hooks.URL(envelope.WebhookCog, snap.ID, 1), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook = %d (violations %v)", resp.StatusCode, ing.rec.violations())
	}
	select {
	case d := <-c:
		if !d.Final || string(d.Body) != string(body) {
			t.Fatalf("delivery %+v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the processor's consumer did not deliver the webhook (violations %v)", proc.rec.violations())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, ok, err := hooks.LastFinal(ctx, envelope.WebhookCog, snap.ID); err != nil || !ok {
		t.Fatalf("direct get of the last final delivery: %v %v (violations %v)", ok, err, proc.rec.violations())
	}
	for _, c := range []*client{ing, proc} {
		if v := c.rec.violations(); len(v) > 0 {
			t.Fatalf("%s violations doing its own job: %v", c.user, v)
		}
	}

	subject := envelope.WebhookSubject(envelope.WebhookCog, snap.ID, true)
	refusedPublish(t, proc, subject)
	jsCall(t, ing, "read a webhook", func(ctx context.Context) error {
		_, err := ing.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.WEBHOOKS."+subject, nil)
		return err
	})
	notif := connect(t, s, "notifier")
	refusedPublish(t, notif, subject)
	jsCall(t, notif, "apply WEBHOOKS", func(ctx context.Context) error { return jsm.ApplyWebhooks(ctx, notif.js) })
	jsCall(t, notif, "read a webhook", func(ctx context.Context) error {
		_, err := notif.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.WEBHOOKS."+subject, nil)
		return err
	})
}
