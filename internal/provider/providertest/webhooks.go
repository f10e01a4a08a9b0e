package providertest

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
)

// Webhooks is an in-memory provider.WebhookSource for tests of the
// providers without NATS: its handler takes the webhooks at the URLs it
// hands out (POST <base>/v1/webhooks/cog/<job>/<n>?token=... and
// <base>/v1/webhooks/replicate?job=<job>) and passes them to the calls
// watching the job; the last final delivery of each job is kept for
// LastFinal. It checks the Cog token, not Replicate signatures; ingest does
// both in production (internal/ingest/webhooks.go), and the processor
// reads what ingest stored (internal/processor/webhooks.go).
type Webhooks struct {
	base string
	key  []byte

	mu    sync.Mutex
	subs  map[string]map[chan provider.WebhookDelivery]struct{}
	final map[string]provider.WebhookDelivery
	// Drop, when set, makes the handler answer 200 and drop a delivery
	// (a webhook lost on the way) when it returns true.
	Drop func(api, job string, final bool) bool
}

var _ provider.WebhookSource = (*Webhooks)(nil)

// NewWebhooks returns a source whose URLs start with base (the URL of an
// httptest server serving it) and whose Cog tokens are keyed with key.
func NewWebhooks(base string, key []byte) *Webhooks {
	return &Webhooks{
		base: strings.TrimSuffix(base, "/"), key: key,
		subs:  map[string]map[chan provider.WebhookDelivery]struct{}{},
		final: map[string]provider.WebhookDelivery{},
	}
}

// URL implements provider.WebhookSource.
func (h *Webhooks) URL(api, job string, n int) string {
	if api == envelope.WebhookCog {
		return h.base + provider.CogWebhookPath(job, n) + "?token=" + provider.CogWebhookToken(h.key, job, n)
	}
	return h.base + "/v1/webhooks/" + api + "?job=" + url.QueryEscape(job)
}

// Watch implements provider.WebhookSource.
func (h *Webhooks) Watch(api, job string) (<-chan provider.WebhookDelivery, func()) {
	c := make(chan provider.WebhookDelivery, 16)
	k := api + "." + job
	h.mu.Lock()
	if h.subs[k] == nil {
		h.subs[k] = map[chan provider.WebhookDelivery]struct{}{}
	}
	h.subs[k][c] = struct{}{}
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		delete(h.subs[k], c)
		if len(h.subs[k]) == 0 {
			delete(h.subs, k)
		}
		h.mu.Unlock()
	}
}

// LastFinal implements provider.WebhookSource.
func (h *Webhooks) LastFinal(_ context.Context, api, job string) (provider.WebhookDelivery, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.final[api+"."+job]
	return d, ok, nil
}

// Deliver hands a delivery to the watchers of job, as a stored delivery
// would be.
func (h *Webhooks) Deliver(api, job string, d provider.WebhookDelivery) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := api + "." + job
	if d.Final {
		h.final[k] = d
	}
	for c := range h.subs[k] {
		select {
		case c <- d:
		default:
			if d.Final { // make room: a final delivery is never lost
				select {
				case <-c:
				default:
				}
				c <- d
			}
		}
	}
}

// ServeHTTP takes a webhook: 200 once handed over, 403 for a wrong Cog
// token, 400 for a body without a status.
func (h *Webhooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var api, job string
	switch rest, isCog := strings.CutPrefix(r.URL.Path, "/v1/webhooks/cog/"); {
	case isCog:
		j, num, _ := strings.Cut(rest, "/")
		n, err := provider.ParseCogWebhookNumber(num)
		if err != nil || !hmac.Equal([]byte(r.URL.Query().Get("token")), []byte(provider.CogWebhookToken(h.key, j, n))) {
			http.Error(w, `{"error":{"code":"forbidden","message":"wrong webhook token"}}`, http.StatusForbidden)
			return
		}
		api, job = envelope.WebhookCog, j
	case r.URL.Path == "/v1/webhooks/replicate":
		api, job = envelope.WebhookReplicate, r.URL.Query().Get("job")
	default:
		http.NotFound(w, r)
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	var st struct {
		Status string `json:"status"`
	}
	if err != nil || json.Unmarshal(b, &st) != nil || st.Status == "" {
		http.Error(w, `{"error":{"code":"invalid_json","message":"not a prediction object"}}`, http.StatusBadRequest)
		return
	}
	final := st.Status == "succeeded" || st.Status == "failed" || st.Status == "canceled"
	if h.Drop != nil && h.Drop(api, job, final) {
		return
	}
	h.Deliver(api, job, provider.WebhookDelivery{Body: b, Final: final})
}
