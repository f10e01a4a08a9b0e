package devstack_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// TestReplicateKind: -kinds image=replicate:acme/painter,video
// -replicate-url <fake>: an image job runs as one Replicate prediction of
// that model (input without "sim") and its output file is kept in the
// outputs bucket and named by the job's result; video jobs stay on the sim
// provider.
func TestReplicateKind(t *testing.T) {
	fake := replicatefake.New(replicatefake.Config{})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	st := devstacktest.Start(t, func(c *devstack.Config) {
		c.Kinds, _ = config.ParseKinds("image=replicate:acme/painter,video")
		c.Replicate.URL = srv.URL
		c.Replicate.Token = replicatefake.DefaultToken
		// Webhooks to the stack's own ingest, verified with the fake's
		// signing secret.
		c.ReplicateWebhookSecret = replicatefake.DefaultWebhookSecret
	})

	s := devstacktest.Submit(t, st.IngestURL, st.Token, `{"kind":"image","input":{"prompt":"a lighthouse","duration_ms":20,"sim":{"fail":"terminal"}}}`, nil)
	got := devstacktest.WaitTerminal(t, st.IngestURL, st.Token, s.ID, 30*time.Second)
	if got.Status != envelope.StatusSucceeded {
		t.Fatalf("image job = %+v, want succeeded", got)
	}
	if b, ct := storedOutput(t, st, got.Result); ct != "text/plain" || len(b) != 16 {
		t.Fatalf("stored output %q (%s), want the fake's 16 bytes of text", b, ct)
	}
	if n := fake.Created(`{"duration_ms":20,"prompt":"a lighthouse"}`); n != 1 || fake.CreatedTotal() != 1 {
		t.Fatalf("Replicate predictions for the job = %d (total %d), want 1", n, fake.CreatedTotal())
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return fake.WebhooksSent() > 0 && fake.WebhooksAccepted() == fake.WebhooksSent() },
		"the fake's webhooks were not all accepted by the stack's ingest")

	s = devstacktest.Submit(t, st.IngestURL, st.Token, `{"kind":"video","input":{"sim":{"duration_ms":5}}}`, nil)
	if got := devstacktest.WaitTerminal(t, st.IngestURL, st.Token, s.ID, 30*time.Second); got.Status != envelope.StatusSucceeded {
		t.Fatalf("video job = %+v", got)
	}
	if n := fake.CreatedTotal(); n != 1 {
		t.Fatalf("Replicate predictions = %d after a video job, want still 1", n)
	}
}

// TestReplicateCancel: DELETE /v1/jobs/{id} of a job whose prediction runs
// on Replicate cancels the prediction there, and the job ends cancelled.
func TestReplicateCancel(t *testing.T) {
	fake := replicatefake.New(replicatefake.Config{})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	st := devstacktest.Start(t, func(c *devstack.Config) {
		c.Kinds, _ = config.ParseKinds("image=replicate:acme/painter")
		c.Replicate.URL = srv.URL
		c.Replicate.Token = replicatefake.DefaultToken
	})
	s := devstacktest.Submit(t, st.IngestURL, st.Token, `{"kind":"image","input":{"duration_ms":600000}}`, nil)
	deadline := time.Now().Add(30 * time.Second)
	for fake.Running() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the prediction never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	req, _ := http.NewRequest(http.MethodDelete, st.IngestURL+"/v1/jobs/"+s.ID, nil)
	req.Header.Set("Authorization", "Bearer "+st.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("DELETE = %d", resp.StatusCode)
	}
	if got := devstacktest.WaitTerminal(t, st.IngestURL, st.Token, s.ID, 30*time.Second); got.Status != envelope.StatusCancelled {
		t.Fatalf("job = %+v, want cancelled", got)
	}
	id := fake.IDs()[0]
	for fake.Status(id) != "canceled" {
		if time.Now().After(deadline) {
			t.Fatalf("prediction %s is %q, want canceled at Replicate", id, fake.Status(id))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if fake.Cancels(id) != 1 || fake.CreatedTotal() != 1 {
		t.Fatalf("cancels = %d, predictions = %d; want 1, 1", fake.Cancels(id), fake.CreatedTotal())
	}
}
