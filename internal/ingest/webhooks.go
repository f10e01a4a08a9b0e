package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
)

// Webhooks on ingest (docs/design.md#webhooks):
//
//	POST /v1/webhooks/replicate?job=<job>             Standard Webhooks signature
//	POST /v1/webhooks/cog/<job>/<n>?token=<token>     Cog: a token in the URL
//
// A delivery is verified, decoded just enough to know the prediction and
// whether it is final, and stored on webhooks.<api>.<job>.<update|final>
// in the WEBHOOKS stream; the answer is 2xx only after the PubAck. A
// replayed delivery is de-duplicated by JetStream (Nats-Msg-Id: the
// webhook-id of a Replicate delivery, a hash of a Cog delivery's body) and
// still answered 2xx. A delivery for a job that does not exist or has
// ended is answered 2xx, dropped and counted: the sender has nothing to
// fix. The processors read the stream (internal/processor/webhooks.go) and
// check that a delivery is about the work they wait for.

// Defaults of the webhook part of Config.
const (
	// DefaultWebhookMaxBody bounds one delivery: a prediction object, with
	// a Cog file output inline as a data: URL. WEBHOOKS stores messages up
	// to 2 MiB (nats.conf's max_payload).
	DefaultWebhookMaxBody = 1536 << 10
	// DefaultWebhookTolerance is how far a signed delivery's
	// webhook-timestamp may be from now (Standard Webhooks: 5 minutes).
	DefaultWebhookTolerance = 5 * time.Minute
)

// Route labels of the webhook routes.
const (
	routeWebhookReplicate = "webhook_replicate"
	routeWebhookCog       = "webhook_cog"
)

// Error codes of refused webhooks.
const (
	CodeInvalidWebhook   = "invalid_webhook"   // missing or malformed signature headers
	CodeInvalidSignature = "invalid_signature" // no signature matches
	CodeStaleWebhook     = "stale_webhook"     // timestamp too far from now
)

// Reasons of beamline_ingest_webhooks_dropped_total.
const (
	dropUnknownJob  = "unknown_job"
	dropFinishedJob = "finished_job"
)

// ParseWebhookSecret reads a Standard Webhooks secret: "whsec_" and the
// base64 of the HMAC key.
func ParseWebhookSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "whsec_")
	if !ok {
		return nil, errors.New("a webhook secret starts with whsec_")
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(key) == 0 {
		return nil, errors.New("a webhook secret is whsec_ and the base64 of its key")
	}
	return key, nil
}

// verifyStandardWebhook checks a Standard Webhooks signature: one of the
// space-separated "v1,<base64>" entries of sigs is the HMAC-SHA256 with key
// over "<id>.<ts>.<body>", and ts (Unix seconds) is within tolerance of
// now. The error is the *apiError to answer.
func verifyStandardWebhook(key []byte, id, ts, sigs string, body []byte, now time.Time, tolerance time.Duration) error {
	if err := checkStandardWebhookHeaders(id, ts, sigs, now, tolerance); err != nil {
		return err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, entry := range strings.Fields(sigs) {
		v, sig, ok := strings.Cut(entry, ",")
		if !ok || v != "v1" {
			continue // another scheme (v1a: asymmetric) or garbage
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return newError(http.StatusUnauthorized, CodeInvalidSignature, "no webhook-signature entry matches")
}

// checkStandardWebhookHeaders is the part of verifyStandardWebhook that
// needs no body: the three headers present and bounded, the timestamp
// within tolerance of now. A delivery that fails it is refused before it
// takes an in-flight slot or has its body read.
func checkStandardWebhookHeaders(id, ts, sigs string, now time.Time, tolerance time.Duration) error {
	if id == "" || ts == "" || sigs == "" {
		return newError(http.StatusBadRequest, CodeInvalidWebhook, "webhook-id, webhook-timestamp and webhook-signature are required")
	}
	if len(id) > 256 || len(sigs) > 4096 {
		return newError(http.StatusBadRequest, CodeInvalidWebhook, "webhook headers too long")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return newError(http.StatusBadRequest, CodeInvalidWebhook, "webhook-timestamp is not Unix seconds")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return newError(http.StatusUnauthorized, CodeStaleWebhook, "webhook-timestamp is more than "+tolerance.String()+" from now")
	}
	return nil
}

// webhookPrediction is what ingest reads of a delivery: a prediction
// object's id and status (Cog and Replicate share them).
type webhookPrediction struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func (p webhookPrediction) final() bool {
	return p.Status == "succeeded" || p.Status == "failed" || p.Status == "canceled"
}

// decodeWebhookPrediction reads a delivery's body; anything but a
// prediction object with an id and a known status is a 400 *apiError.
func decodeWebhookPrediction(b []byte) (webhookPrediction, error) {
	var p webhookPrediction
	if !json.Valid(b) {
		return p, newError(http.StatusBadRequest, CodeInvalidJSON, "body is not JSON")
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, newError(http.StatusBadRequest, CodeInvalidJSON, "body is not a prediction object: "+jsonReason(err))
	}
	switch p.Status {
	case "starting", "processing", "succeeded", "failed", "canceled":
	default:
		return p, newError(http.StatusBadRequest, CodeInvalidJSON, "body is not a prediction object: unknown status")
	}
	if p.ID == "" || len(p.ID) > 128 {
		return p, newError(http.StatusBadRequest, CodeInvalidJSON, "body is not a prediction object: no id")
	}
	return p, nil
}

// acquireWebhookSlot takes one of the WebhookMaxInFlight slots, or
// refuses the delivery with 429 and Retry-After (false): overload is
// refused, never dropped, and providers send a refused webhook again. The
// slot is taken before the body is read, so slow senders count too, and
// after every check that needs no body (the job, Cog's URL token,
// Replicate's signature headers and timestamp), so a request that could
// never be stored takes none.
func (s *Service) acquireWebhookSlot(w http.ResponseWriter, api string) bool {
	select {
	case s.hookSlots <- struct{}{}:
	default:
		e := newError(http.StatusTooManyRequests, CodeOverloaded, "too many webhooks in flight; send it again later")
		e.RetryAfter = retryInFlight
		s.refuseWebhook(w, api, e)
		return false
	}
	s.metrics.hooksInflight.Inc()
	return true
}

func (s *Service) releaseWebhookSlot() {
	<-s.hookSlots
	s.metrics.hooksInflight.Dec()
}

// readWebhookBody reads the body under the size cap.
func (s *Service) readWebhookBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.WebhookMaxBody+1))
	if err != nil {
		return nil, newError(http.StatusBadRequest, CodeInvalidJSON, "reading the body failed")
	}
	if int64(len(b)) > s.cfg.WebhookMaxBody {
		return nil, newError(http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("a webhook body is at most %d bytes", s.cfg.WebhookMaxBody))
	}
	return b, nil
}

// replicateWebhook takes POST /v1/webhooks/replicate?job=<job>.
func (s *Service) replicateWebhook(w http.ResponseWriter, r *http.Request) {
	const api = envelope.WebhookReplicate
	if s.replicateKey == nil {
		s.refuseWebhook(w, api, newError(http.StatusNotFound, CodeNotFound, "Replicate webhooks are not configured ($"+provider.EnvReplicateWebhookSecret+")"))
		return
	}
	job := r.URL.Query().Get("job")
	if err := envelope.ValidateID("job", job); err != nil {
		s.refuseWebhook(w, api, newError(http.StatusBadRequest, CodeInvalidID, "the job query parameter is not a job id"))
		return
	}
	id := r.Header.Get("webhook-id")
	ts := r.Header.Get("webhook-timestamp")
	sigs := r.Header.Get("webhook-signature")
	if err := checkStandardWebhookHeaders(id, ts, sigs, time.Now(), s.cfg.WebhookTolerance); err != nil {
		s.refuseWebhook(w, api, err)
		return
	}
	if !s.acquireWebhookSlot(w, api) {
		return
	}
	defer s.releaseWebhookSlot()
	b, err := s.readWebhookBody(r)
	if err != nil {
		s.refuseWebhook(w, api, err)
		return
	}
	if err := verifyStandardWebhook(s.replicateKey, id, ts, sigs, b, time.Now(), s.cfg.WebhookTolerance); err != nil {
		s.refuseWebhook(w, api, err)
		return
	}
	pred, err := decodeWebhookPrediction(b)
	if err != nil {
		s.refuseWebhook(w, api, err)
		return
	}
	sent, _ := strconv.ParseInt(ts, 10, 64)
	s.storeWebhook(w, r, api, job, pred, b, "replicate:"+id, time.Unix(sent, 0))
}

// cogWebhook takes POST /v1/webhooks/cog/<job>/<n>?token=<token>.
func (s *Service) cogWebhook(w http.ResponseWriter, r *http.Request) {
	const api = envelope.WebhookCog
	if s.cfg.WebhookKey == nil {
		s.refuseWebhook(w, api, newError(http.StatusNotFound, CodeNotFound, "Cog webhooks are not configured ($"+provider.EnvWebhookKey+")"))
		return
	}
	job := r.PathValue("job")
	n, nerr := provider.ParseCogWebhookNumber(r.PathValue("n"))
	if envelope.ValidateID("job", job) != nil || nerr != nil {
		s.refuseWebhook(w, api, newError(http.StatusBadRequest, CodeInvalidID, "the path is not /v1/webhooks/cog/<job>/<prediction number>"))
		return
	}
	if !hmac.Equal([]byte(r.URL.Query().Get("token")), []byte(provider.CogWebhookToken(s.cfg.WebhookKey, job, n))) {
		s.refuseWebhook(w, api, newError(http.StatusForbidden, CodeForbidden, "wrong webhook token"))
		return
	}
	if !s.acquireWebhookSlot(w, api) {
		return
	}
	defer s.releaseWebhookSlot()
	b, err := s.readWebhookBody(r)
	if err != nil {
		s.refuseWebhook(w, api, err)
		return
	}
	pred, err := decodeWebhookPrediction(b)
	if err == nil && pred.ID != provider.CogPredictionID(job, n) {
		err = newError(http.StatusBadRequest, CodeInvalidJSON, "the prediction is not the one this URL was given for")
	}
	if err != nil {
		s.refuseWebhook(w, api, err)
		return
	}
	// Cog does not sign, and retries a completed webhook with the same
	// body: the body's hash de-duplicates.
	sum := sha256.Sum256(b)
	s.storeWebhook(w, r, api, job, pred, b, "cog:"+job+":"+strconv.Itoa(n)+":"+hex.EncodeToString(sum[:16]), time.Time{})
}

func (s *Service) refuseWebhook(w http.ResponseWriter, api string, err error) {
	var e *apiError
	if !errors.As(err, &e) {
		e = newError(http.StatusInternalServerError, CodeInternal, "internal error")
	}
	s.metrics.webhooks.WithLabelValues(api, "refused_"+e.Code).Inc()
	writeError(w, e)
}

// webhookAnswer is the body of a 200 to a webhook.
type webhookAnswer struct {
	// Result is stored, duplicate (stored before) or dropped.
	Result string `json:"result"`
	// Reason says why a delivery was dropped.
	Reason string `json:"reason,omitempty"`
}

// storeWebhook drops a delivery for a job that does not exist or has
// ended, and stores any other, answering 200 only after the PubAck. sent,
// when known, is when the provider sent it (webhook lag).
func (s *Service) storeWebhook(w http.ResponseWriter, r *http.Request, api, job string, pred webhookPrediction, body []byte, msgID string, sent time.Time) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	snap, _, err := s.store.Lookup(ctx, job)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		s.dropWebhook(w, api, job, dropUnknownJob)
		return
	case err != nil:
		s.log.Warn("webhook: job not read", "api", api, "job", job, "err", err)
		s.refuseWebhook(w, api, &apiError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "job state unavailable", RetryAfter: retryUnavailable})
		return
	case snap.Status.Terminal():
		s.dropWebhook(w, api, job, dropFinishedJob)
		return
	}
	m := nats.NewMsg(envelope.WebhookSubject(api, job, pred.final()))
	m.Header.Set(envelope.HeaderMsgID, msgID)
	m.Data = body
	ack, err := s.js.PublishMsg(ctx, m)
	if err != nil {
		s.log.Warn("webhook not stored", "api", api, "job", job, "prediction", pred.ID, "err", err)
		s.refuseWebhook(w, api, &apiError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "delivery not stored; send it again", RetryAfter: retryUnavailable})
		return
	}
	result := "stored"
	if ack.Duplicate {
		result = "duplicate"
	} else if !sent.IsZero() {
		s.metrics.webhookLag.WithLabelValues(api).Observe(max(time.Since(sent).Seconds(), 0))
	}
	s.metrics.webhooks.WithLabelValues(api, result).Inc()
	httpx.WriteJSON(w, http.StatusOK, webhookAnswer{Result: result})
}

func (s *Service) dropWebhook(w http.ResponseWriter, api, job, reason string) {
	s.metrics.webhooks.WithLabelValues(api, "dropped").Inc()
	s.metrics.webhooksDropped.WithLabelValues(api, reason).Inc()
	s.log.Info("webhook dropped", "api", api, "job", job, "reason", reason)
	httpx.WriteJSON(w, http.StatusOK, webhookAnswer{Result: "dropped", Reason: reason})
}
