package ingest

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

var testWebhookKey = []byte("webhook-key-0123456789")

func newWebhookHarness(t *testing.T) *harness {
	t.Helper()
	return newHarness(t, func(c *Config) {
		c.ReplicateWebhookSecret = replicatefake.DefaultWebhookSecret
		c.WebhookKey = testWebhookKey
		c.WebhookMaxBody = 4 << 10
	})
}

// runningJob submits a job and returns its id (a queued job exists: its
// JOBS message is its state).
func (h *harness) runningJob() string {
	h.t.Helper()
	r := h.submit(token(h.t, "alice"), `{"kind":"image","input":{}}`)
	if r.Status != http.StatusAccepted {
		h.t.Fatalf("submit = %d %s", r.Status, r.Body)
	}
	return r.snapshot(h.t).ID
}

// signed is a Replicate delivery signed with secret at ts.
func signed(t *testing.T, secret, id string, ts int64, body []byte) []reqOpt {
	t.Helper()
	sig, err := replicatefake.Sign(secret, id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	return []reqOpt{
		withHeader("webhook-id", id),
		withHeader("webhook-timestamp", strconv.FormatInt(ts, 10)),
		withHeader("webhook-signature", "v1a,ignored "+sig),
	}
}

func (h *harness) webhookAnswer(r response) webhookAnswer {
	h.t.Helper()
	var a webhookAnswer
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &a) != nil {
		h.t.Fatalf("webhook answer = %d %s", r.Status, r.Body)
	}
	return a
}

// webhooksStored is the number of deliveries in WEBHOOKS.
func (h *harness) webhooksStored() uint64 {
	h.t.Helper()
	return h.streamMsgs(streams.Webhooks)
}

// TestReplicateWebhookStoredOnce: a signed delivery is stored on the job's
// final subject; its replay (same webhook-id, newly signed) is answered 200
// and not stored again.
func TestReplicateWebhookStoredOnce(t *testing.T) {
	h := newWebhookHarness(t)
	job := h.runningJob()
	body := []byte(`{"id":"pred1","status":"succeeded","output":"x"}`)
	path := "/v1/webhooks/replicate?job=" + job
	now := time.Now().Unix()
	if a := h.webhookAnswer(h.do(http.MethodPost, path, body, signed(t, replicatefake.DefaultWebhookSecret, "msg_1", now, body)...)); a.Result != "stored" {
		t.Fatalf("first = %+v", a)
	}
	if a := h.webhookAnswer(h.do(http.MethodPost, path, body, signed(t, replicatefake.DefaultWebhookSecret, "msg_1", now+1, body)...)); a.Result != "duplicate" {
		t.Fatalf("replay = %+v", a)
	}
	if n := h.webhooksStored(); n != 1 {
		t.Fatalf("stored %d deliveries, want 1", n)
	}
	s, err := h.js.Stream(context.Background(), streams.Webhooks)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), envelope.WebhookSubject(envelope.WebhookReplicate, job, true))
	if err != nil || string(m.Data) != string(body) {
		t.Fatalf("stored final = %v %v", m, err)
	}
	// A non-terminal delivery goes to the update subject.
	upd := []byte(`{"id":"pred1","status":"processing","logs":"50%"}`)
	h.webhookAnswer(h.do(http.MethodPost, path, upd, signed(t, replicatefake.DefaultWebhookSecret, "msg_2", now, upd)...))
	if _, err := s.GetLastMsgForSubject(context.Background(), envelope.WebhookSubject(envelope.WebhookReplicate, job, false)); err != nil {
		t.Fatalf("update not stored: %v", err)
	}
	if v := h.metric("beamline_ingest_webhooks_total", map[string]string{"api": "replicate", "result": "duplicate"}); v != 1 {
		t.Fatalf("duplicates counted = %v", v)
	}
}

// TestReplicateWebhookRefused: forged, tampered, stale, unsigned, oversize
// and malformed deliveries get a JSON 4xx with a clear code, and nothing is
// stored.
func TestReplicateWebhookRefused(t *testing.T) {
	h := newWebhookHarness(t)
	job := h.runningJob()
	good := []byte(`{"id":"p","status":"succeeded"}`)
	now := time.Now().Unix()
	forged := "whsec_" + "Zm9yZ2VkLWtleS1mb3JnZWQta2V5"
	big := []byte(`{"id":"p","status":"succeeded","output":"` + strings.Repeat("a", 5<<10) + `"}`)
	for _, tc := range []struct {
		name   string
		path   string
		body   []byte
		opts   []reqOpt
		status int
		code   string
	}{
		{"wrong secret", "?job=" + job, good, signed(t, forged, "m1", now, good), 401, CodeInvalidSignature},
		{"tampered body", "?job=" + job, []byte(`{"id":"p","status":"failed"}`), signed(t, replicatefake.DefaultWebhookSecret, "m2", now, good), 401, CodeInvalidSignature},
		{"signed for another id", "?job=" + job, good, append(signed(t, replicatefake.DefaultWebhookSecret, "m3", now, good), withHeader("webhook-id", "m4")), 401, CodeInvalidSignature},
		{"old timestamp", "?job=" + job, good, signed(t, replicatefake.DefaultWebhookSecret, "m5", now-6*60, good), 401, CodeStaleWebhook},
		{"future timestamp", "?job=" + job, good, signed(t, replicatefake.DefaultWebhookSecret, "m6", now+6*60, good), 401, CodeStaleWebhook},
		{"unsigned", "?job=" + job, good, nil, 400, CodeInvalidWebhook},
		{"timestamp not a number", "?job=" + job, good, append(signed(t, replicatefake.DefaultWebhookSecret, "m7", now, good), withHeader("webhook-timestamp", "soon")), 400, CodeInvalidWebhook},
		{"oversize", "?job=" + job, big, signed(t, replicatefake.DefaultWebhookSecret, "m8", now, big), 413, CodeTooLarge},
		{"not JSON", "?job=" + job, []byte(`{"id":`), signed(t, replicatefake.DefaultWebhookSecret, "m9", now, []byte(`{"id":`)), 400, CodeInvalidJSON},
		{"not a prediction", "?job=" + job, []byte(`{"id":"p","status":"done"}`), signed(t, replicatefake.DefaultWebhookSecret, "m10", now, []byte(`{"id":"p","status":"done"}`)), 400, CodeInvalidJSON},
		{"no job", "", good, signed(t, replicatefake.DefaultWebhookSecret, "m11", now, good), 400, CodeInvalidID},
		{"bad job", "?job=a.b", good, signed(t, replicatefake.DefaultWebhookSecret, "m12", now, good), 400, CodeInvalidID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(http.MethodPost, "/v1/webhooks/replicate"+tc.path, tc.body, tc.opts...)
			if r.Status != tc.status || r.errorCode(t) != tc.code {
				t.Fatalf("answer = %d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
	if n := h.webhooksStored(); n != 0 {
		t.Fatalf("stored %d refused deliveries", n)
	}
}

// TestCogWebhooks: a delivery at the URL the processor gives Cog is stored
// once however often Cog sends it; a wrong token, another prediction's body
// or a bad path is refused and nothing is stored.
func TestCogWebhooks(t *testing.T) {
	h := newWebhookHarness(t)
	job := h.runningJob()
	id := provider.CogPredictionID(job, 2)
	path := provider.CogWebhookPath(job, 2)
	tok := provider.CogWebhookToken(testWebhookKey, job, 2)
	body := []byte(`{"id":"` + id + `","status":"succeeded","output":"data:text/plain;base64,aGk="}`)
	for i, want := range []string{"stored", "duplicate"} {
		if a := h.webhookAnswer(h.do(http.MethodPost, path+"?token="+tok, body)); a.Result != want {
			t.Fatalf("delivery %d = %+v, want %s", i, a, want)
		}
	}
	if n := h.webhooksStored(); n != 1 {
		t.Fatalf("stored %d, want 1", n)
	}
	other := []byte(`{"id":"` + provider.CogPredictionID(job, 1) + `","status":"succeeded"}`)
	for _, tc := range []struct {
		name   string
		target string
		body   []byte
		status int
		code   string
	}{
		{"wrong token", path + "?token=" + strings.Repeat("0", 32), body, 403, CodeForbidden},
		{"no token", path, body, 403, CodeForbidden},
		{"token of another number", provider.CogWebhookPath(job, 1) + "?token=" + tok, body, 403, CodeForbidden},
		{"token of another key", path + "?token=" + provider.CogWebhookToken([]byte("another-key-0123456789"), job, 2), body, 403, CodeForbidden},
		{"another prediction's body", path + "?token=" + tok, other, 400, CodeInvalidJSON},
		{"malformed body", path + "?token=" + tok, []byte(`nope`), 400, CodeInvalidJSON},
		{"bad number", "/v1/webhooks/cog/" + job + "/02?token=" + tok, body, 400, CodeInvalidID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(http.MethodPost, tc.target, tc.body)
			if r.Status != tc.status || r.errorCode(t) != tc.code {
				t.Fatalf("answer = %d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
	if n := h.webhooksStored(); n != 1 {
		t.Fatalf("stored %d after the refusals, want still 1", n)
	}
	if r := h.do(http.MethodGet, path+"?token="+tok, nil); r.Status != http.StatusMethodNotAllowed {
		t.Fatalf("GET = %d", r.Status)
	}
}

// TestWebhookForUnknownOrFinishedJob: acknowledged (the sender has nothing
// to fix), not stored, counted by reason.
func TestWebhookForUnknownOrFinishedJob(t *testing.T) {
	h := newWebhookHarness(t)
	ghost := "no-such-job"
	body := []byte(`{"id":"` + provider.CogPredictionID(ghost, 1) + `","status":"succeeded"}`)
	a := h.webhookAnswer(h.do(http.MethodPost, provider.CogWebhookPath(ghost, 1)+"?token="+provider.CogWebhookToken(testWebhookKey, ghost, 1), body))
	if a.Result != "dropped" || a.Reason != dropUnknownJob {
		t.Fatalf("unknown job: %+v", a)
	}
	job := h.runningJob()
	if r := h.do(http.MethodDelete, "/v1/jobs/"+job, nil, bearer(token(t, "alice"))); r.Status != http.StatusOK {
		t.Fatalf("cancel = %d %s", r.Status, r.Body)
	}
	rb := []byte(`{"id":"p","status":"processing"}`)
	a = h.webhookAnswer(h.do(http.MethodPost, "/v1/webhooks/replicate?job="+job, rb, signed(t, replicatefake.DefaultWebhookSecret, "m1", time.Now().Unix(), rb)...))
	if a.Result != "dropped" || a.Reason != dropFinishedJob {
		t.Fatalf("finished job: %+v", a)
	}
	if n := h.webhooksStored(); n != 0 {
		t.Fatalf("stored %d dropped deliveries", n)
	}
	for api, reason := range map[string]string{"cog": dropUnknownJob, "replicate": dropFinishedJob} {
		if v := h.metric("beamline_ingest_webhooks_dropped_total", map[string]string{"api": api, "reason": reason}); v != 1 {
			t.Errorf("dropped %s/%s = %v, want 1", api, reason, v)
		}
	}
}

// TestWebhooksNotConfigured: without a secret or key the routes answer a
// JSON 404 and the WEBHOOKS stream is not needed.
func TestWebhooksNotConfigured(t *testing.T) {
	h := newHarness(t, nil)
	for _, path := range []string{"/v1/webhooks/replicate?job=j1", provider.CogWebhookPath("j1", 1) + "?token=x"} {
		if r := h.do(http.MethodPost, path, []byte(`{}`)); r.Status != http.StatusNotFound || r.errorCode(t) != CodeNotFound {
			t.Errorf("%s = %d %s", path, r.Status, r.Body)
		}
	}
	if _, err := ParseWebhookSecret("secret"); err == nil {
		t.Error("a secret without whsec_ was taken")
	}
	if _, err := ParseWebhookSecret("whsec_!!"); err == nil {
		t.Error("a secret that is not base64 was taken")
	}
}

// BenchmarkCogWebhook: one Cog webhook received, checked and stored in
// JetStream (answered after the PubAck) per op, over HTTP on 127.0.0.1.
func BenchmarkCogWebhook(b *testing.B) {
	_, nc, js := natstest.StartWithStreams(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	svc, err := New(Config{Listener: ln, Kinds: []string{"image"}, Secret: testSecret, WebhookKey: testWebhookKey}, nc, js, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	tok, err := auth.Issue(testSecret, "alice", false, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	var snap envelope.Snapshot
	for range 100 { // until ingest serves
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/jobs", strings.NewReader(`{"kind":"image","input":{}}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&snap)
			resp.Body.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if snap.ID == "" {
		b.Fatal("no job submitted")
	}
	target := base + provider.CogWebhookPath(snap.ID, 1) + "?token=" + provider.CogWebhookToken(testWebhookKey, snap.ID, 1)
	id := provider.CogPredictionID(snap.ID, 1)
	b.ResetTimer()
	for i := range b.N {
		body := `{"id":"` + id + `","status":"processing","logs":"step ` + strconv.Itoa(i) + `"}`
		resp, err := client.Post(target, "application/json", strings.NewReader(body))
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("webhook: %v %v", resp, err)
		}
		resp.Body.Close()
	}
}

// TestWebhookInFlightLimit: with every webhook slot taken (here by a
// provider slowly sending its body), the next delivery — Replicate's or
// Cog's — gets 429 with Retry-After and a JSON error at once, and nothing
// of it is stored: the provider sends it again. The pool is the webhooks'
// own: a submission still goes through meanwhile. Once the slot is free
// the same delivery is stored.
func TestWebhookInFlightLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.ReplicateWebhookSecret = replicatefake.DefaultWebhookSecret
		c.WebhookKey = testWebhookKey
		c.WebhookMaxInFlight = 1
	})
	job := h.runningJob()
	path := "/v1/webhooks/replicate?job=" + job
	now := time.Now().Unix()
	slowBody := []byte(`{"id":"pred1","status":"processing","logs":"10%"}`)
	pr, pw := io.Pipe()
	slow := mustRequest(t, http.MethodPost, h.url+path, pr)
	slow.Header.Set("Content-Type", "application/json")
	for _, o := range signed(t, replicatefake.DefaultWebhookSecret, "msg_slow", now, slowBody) {
		o(slow)
	}
	done := make(chan int, 1)
	go func() {
		resp, err := h.client.Do(slow)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	if _, err := pw.Write(slowBody[:10]); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return h.metric("beamline_ingest_webhooks_inflight", nil) == 1 })

	body := []byte(`{"id":"pred1","status":"succeeded","output":"x"}`)
	refused := []response{
		h.do(http.MethodPost, path, body, signed(t, replicatefake.DefaultWebhookSecret, "msg_1", now, body)...),
		h.do(http.MethodPost, "/v1/webhooks/cog/"+job+"/1?token="+provider.CogWebhookToken(testWebhookKey, job, 1),
			[]byte(`{"id":"`+provider.CogPredictionID(job, 1)+`","status":"succeeded","output":"x"}`)),
	}
	for _, r := range refused {
		if r.Status != http.StatusTooManyRequests || r.errorCode(t) != CodeOverloaded || r.Header.Get("Retry-After") == "" {
			t.Fatalf("webhook with no slot free = %d %s (Retry-After %q), want 429 %s with Retry-After", r.Status, r.Body, r.Header.Get("Retry-After"), CodeOverloaded)
		}
	}
	// A delivery that could never be stored takes no slot: with none free
	// it is refused for what is wrong with it, not with 429.
	unauthenticated := []struct {
		name   string
		r      response
		status int
		code   string
	}{
		{"Cog, wrong token", h.do(http.MethodPost, "/v1/webhooks/cog/"+job+"/1?token=wrong",
			[]byte(`{"id":"`+provider.CogPredictionID(job, 1)+`","status":"succeeded"}`)), http.StatusForbidden, CodeForbidden},
		{"Replicate, stale timestamp", h.do(http.MethodPost, path, body, signed(t, replicatefake.DefaultWebhookSecret, "msg_2", now-3600, body)...),
			http.StatusUnauthorized, CodeStaleWebhook},
		{"Replicate, unsigned", h.do(http.MethodPost, path, body), http.StatusBadRequest, CodeInvalidWebhook},
	}
	for _, u := range unauthenticated {
		if u.r.Status != u.status || u.r.errorCode(t) != u.code {
			t.Fatalf("%s with no slot free = %d %s, want %d %s", u.name, u.r.Status, u.r.Body, u.status, u.code)
		}
	}
	if n := h.webhooksStored(); n != 0 {
		t.Fatalf("stored %d deliveries while overloaded", n)
	}
	if r := h.submit(token(t, "alice"), `{"kind":"image"}`); r.Status != http.StatusAccepted {
		t.Fatalf("a submission while the webhooks' slots are taken = %d %s", r.Status, r.Body)
	}

	if _, err := pw.Write(slowBody[10:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case code := <-done:
		if code != http.StatusOK {
			t.Fatalf("slow webhook: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("slow webhook did not finish")
	}
	if a := h.webhookAnswer(h.do(http.MethodPost, path, body, signed(t, replicatefake.DefaultWebhookSecret, "msg_1", now, body)...)); a.Result != "stored" {
		t.Fatalf("the refused delivery sent again = %+v", a)
	}
	if v := h.metric("beamline_ingest_webhooks_total", map[string]string{"api": "replicate", "result": "refused_" + CodeOverloaded}); v != 1 {
		t.Fatalf("refused_overloaded counted = %v", v)
	}
}
