package replicatefake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// Webhooks, as docs/topics/webhooks (receive-webhook, verify-webhook)
// describe them: a POST of the prediction object to the prediction's
// webhook URL for the events in its webhook_events_filter (start: at once;
// output: each new output; logs: each new log line; completed: when
// terminal); by default "whenever there are new outputs or the prediction
// has finished" (output, completed). Each delivery is signed the Standard
// Webhooks way: webhook-id (the same on a retry), webhook-timestamp (Unix
// seconds) and webhook-signature, space-separated "v1,<base64>" entries of
// HMAC-SHA256 over "<id>.<timestamp>.<body>" keyed with the base64 part of
// the account's "whsec_..." secret. A delivery not answered 2xx "might be
// retried": the fake retries the completed one.

// DefaultWebhookSecret is the signing secret when Config.WebhookSecret is "".
const DefaultWebhookSecret = "whsec_ZmFrZS1yZXBsaWNhdGUtd2ViaG9vay1rZXk="

// WebhookFaults bend webhook delivery the way networks do.
type WebhookFaults struct {
	// Drop, when set, drops the delivery of event (n counts the
	// prediction's deliveries from 1) without sending it.
	Drop func(event string, n int) bool
	// Duplicate sends every delivery twice (same webhook-id).
	Duplicate bool
	// Reorder holds every delivery of a prediction until it completes,
	// then sends them newest first (completed before start).
	Reorder bool
	// Secret, when set, signs with this secret instead of the account's
	// (a forged delivery).
	Secret string
}

// SetWebhookFaults replaces the webhook faults.
func (s *Server) SetWebhookFaults(f WebhookFaults) {
	s.mu.Lock()
	s.hookFaults = f
	s.mu.Unlock()
}

// WebhooksSent is how many webhook requests were sent; WebhooksAccepted
// how many were answered 2xx.
func (s *Server) WebhooksSent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hooksSent
}

// WebhooksAccepted is how many webhook requests were answered 2xx.
func (s *Server) WebhooksAccepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hooksOK
}

// Sign returns the webhook-signature value of a delivery: "v1,<base64>" of
// HMAC-SHA256 over "<id>.<timestamp>.<body>" with the key in secret
// ("whsec_<base64 key>").
func Sign(secret, id string, timestamp int64, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return "", fmt.Errorf("replicatefake: webhook secret: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", id, timestamp)
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

type delivery struct {
	id    string
	event string
	body  []byte
}

// webhook queues (or sends) a delivery of event with the prediction's
// current state, when its filter asks for it. The caller holds s.mu; the
// send happens in flush, without it.
func (s *Server) webhookLocked(p *prediction, event string) {
	if p.Webhook == "" {
		return
	}
	filter := p.WebhookEventsFilter
	if len(filter) == 0 {
		filter = []string{"output", "completed"}
	}
	want := false
	for _, e := range filter {
		want = want || e == event
	}
	if !want {
		return
	}
	s.hookSeq++
	p.hookN++
	if f := s.hookFaults.Drop; f != nil && f(event, p.hookN) {
		return
	}
	p.pending = append(p.pending, delivery{id: s.hookIDs + strconv.Itoa(s.hookSeq), event: event, body: p.snapshot()})
}

// flush sends the prediction's queued deliveries (all of them, newest
// first, once it completed when Reorder is set).
func (s *Server) flush(p *prediction) {
	s.mu.Lock()
	faults := s.hookFaults
	if faults.Reorder && !p.terminal() {
		s.mu.Unlock()
		return
	}
	batch := p.pending
	p.pending = nil
	url := p.Webhook
	s.mu.Unlock()
	if faults.Reorder {
		for i, j := 0, len(batch)-1; i < j; i, j = i+1, j-1 {
			batch[i], batch[j] = batch[j], batch[i]
		}
	}
	secret := s.cfg.WebhookSecret
	if faults.Secret != "" {
		secret = faults.Secret
	}
	for _, d := range batch {
		copies := 1
		if faults.Duplicate {
			copies = 2
		}
		for range copies {
			s.send(url, secret, d)
		}
	}
}

// send POSTs one delivery; the completed one is retried on a non-2xx.
func (s *Server) send(url, secret string, d delivery) {
	tries := 1
	if d.event == "completed" {
		tries = 4
	}
	for i := range tries {
		ts := time.Now().Unix()
		sig, err := Sign(secret, d.id, ts, d.body)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(d.body))
		if err != nil {
			cancel()
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("webhook-id", d.id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("webhook-signature", sig)
		resp, err := s.cfg.Client.Do(req)
		ok := false
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			ok = resp.StatusCode/100 == 2
		}
		cancel()
		s.mu.Lock()
		s.hooksSent++
		if ok {
			s.hooksOK++
		}
		s.mu.Unlock()
		if ok || s.ctx.Err() != nil {
			return
		}
		if flow.Sleep(s.ctx, time.Duration(i+1)*20*time.Millisecond) != nil {
			return
		}
	}
}
