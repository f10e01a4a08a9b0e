package provider

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/beamline/beamline/internal/auth"
)

// Environment variables of webhooks (docs/design.md#webhooks).
const (
	// EnvWebhookKey is the key of the tokens in the webhook URLs given to
	// Cog (which does not sign its webhooks), shared by ingest, which
	// checks them, and the processor, which makes them. When it is unset
	// the key is derived from EnvAuthSecret (WebhookKey), so a deployment
	// that sets only the auth secret works.
	EnvWebhookKey = "BEAMLINE_WEBHOOK_KEY"
	// EnvReplicateWebhookSecret is the "whsec_..." signing secret of
	// Replicate's webhooks (GET /v1/webhooks/default/secret); ingest
	// verifies each delivery with it.
	EnvReplicateWebhookSecret = "BEAMLINE_REPLICATE_WEBHOOK_SECRET"
)

// WebhookDelivery is one webhook a remote API sent about a job's work, as
// ingest stored it: the body is the API's prediction object, unverified
// beyond what ingest checked (a Replicate signature, a Cog URL token), so
// the provider still checks that it names the work it waits for.
type WebhookDelivery struct {
	Body []byte
	// Final is set for a terminal state (succeeded, failed, canceled).
	Final bool
}

// WebhookSource hands the webhooks of remote work to the providers that
// wait for it. The processor implements it over the WEBHOOKS stream that
// ingest fills (internal/processor/webhooks.go): one consumer per process,
// dispatching to the jobs waiting there. api is envelope.WebhookCog or
// envelope.WebhookReplicate.
type WebhookSource interface {
	// URL is the webhook URL to give the remote side for prediction
	// number n of job.
	URL(api, job string, n int) string
	// Watch receives the deliveries for job from now on, until stop is
	// called. A delivery is never waited for: a full channel loses an
	// update, never a final delivery (the oldest update makes room).
	Watch(api, job string) (c <-chan WebhookDelivery, stop func())
	// LastFinal reads the last final delivery stored for job (it may be
	// about an earlier prediction of the job); ok is false when there is
	// none. Call it after Watch, so a delivery stored in between is seen
	// by one or the other.
	LastFinal(ctx context.Context, api, job string) (d WebhookDelivery, ok bool, err error)
}

// WebhookFuncSource is a WebhookSource that can also hand the deliveries
// of a job to a func, so a wait needs no goroutine reading a channel.
type WebhookFuncSource interface {
	// WatchFunc calls fn with each delivery for job from now on, until
	// stop is called; fn must not block (it is called from the source's
	// dispatch).
	WatchFunc(api, job string, fn func(WebhookDelivery)) (stop func())
}

// watchFunc hands the deliveries of job to fn: with the source's
// WatchFunc when it has one, else from its channel on a goroutine.
func watchFunc(s WebhookSource, api, job string, fn func(WebhookDelivery)) (stop func()) {
	if fs, ok := s.(WebhookFuncSource); ok {
		return fs.WatchFunc(api, job, fn)
	}
	c, stopWatch := s.Watch(api, job)
	quit := make(chan struct{})
	go func() {
		for {
			select {
			case d := <-c:
				fn(d)
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			stopWatch()
			close(quit)
		})
	}
}

// WebhookKey is the key of Cog webhook tokens: EnvWebhookKey when set,
// else derived from EnvAuthSecret (an HMAC, so the webhook key does not
// reveal the auth secret). Ingest and the processor both call it, so they
// always agree. getenv is usually os.Getenv.
func WebhookKey(getenv func(string) string) ([]byte, error) {
	if k := getenv(EnvWebhookKey); k != "" {
		if len(k) < auth.MinSecretLen {
			return nil, fmt.Errorf("%w: $%s is shorter than %d bytes", ErrInvalidConfig, EnvWebhookKey, auth.MinSecretLen)
		}
		return []byte(k), nil
	}
	s := getenv(auth.EnvSecret)
	if len(s) < auth.MinSecretLen {
		return nil, fmt.Errorf("%w: webhooks need $%s or $%s (at least %d bytes)", ErrInvalidConfig, EnvWebhookKey, auth.EnvSecret, auth.MinSecretLen)
	}
	return DeriveWebhookKey([]byte(s)), nil
}

// DeriveWebhookKey is the webhook key of a deployment that sets only the
// auth secret.
func DeriveWebhookKey(authSecret []byte) []byte {
	m := hmac.New(sha256.New, authSecret)
	m.Write([]byte("beamline/webhook-key"))
	return m.Sum(nil)
}

// CogWebhookToken is the token in the webhook URL of prediction number n
// of job (Cog does not sign its webhooks): 32 hex digits of an HMAC of
// both. Compare it with hmac.Equal.
func CogWebhookToken(key []byte, job string, n int) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cog-webhook\x00" + job + "\x00" + strconv.Itoa(n)))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// ErrNoWebhookPath: a Cog webhook path is not /v1/webhooks/cog/<job>/<n>.
var ErrNoWebhookPath = errors.New("provider: not a cog webhook path")

// CogWebhookPath is the path of the webhook URL of prediction number n of
// job, below the ingest base URL: /v1/webhooks/cog/<job>/<n>.
func CogWebhookPath(job string, n int) string {
	return "/v1/webhooks/cog/" + job + "/" + strconv.Itoa(n)
}

// ParseCogWebhookNumber reads the prediction number of a Cog webhook path
// (a positive decimal without sign or leading zero).
func ParseCogWebhookNumber(s string) (int, error) {
	if s == "" || len(s) > 9 || s[0] == '0' || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%w: prediction number %q", ErrNoWebhookPath, s)
	}
	return strconv.Atoi(s)
}
