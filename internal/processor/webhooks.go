package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// Webhooks on ingest (docs/design.md#webhooks), the processor's side.
//
// Ingest verifies each webhook a provider sends and stores it in the
// WEBHOOKS stream on webhooks.<api>.<job>.<update|final>. Each processor
// reads the whole stream with ONE ordered consumer (not one per job: a
// processor may wait on thousands of predictions) and hands every delivery
// to the calls of its own that Watch the job; deliveries of jobs waiting
// elsewhere are skipped. A run resumed after a crash, or a call that comes
// to Watch after its prediction ended, reads the job's last final delivery
// by direct get (LastFinal). The providers check that a delivery names the
// prediction they wait for: ingest checked who sent it, not which work it
// is about.

// webhookBuffer is the channel of one watching call: a burst of updates
// (logs) beyond it loses the oldest, never a final delivery.
const webhookBuffer = 16

// webhookRewind is how far before the processor's start its consumer
// begins, so a delivery stored while it was being created is not missed
// (LastFinal covers final deliveries anyway).
const webhookRewind = 5 * time.Second

// Webhooks is the processor's provider.WebhookSource. Build it with
// NewWebhooks, give it to the providers (CogConfig.Webhooks,
// ReplicateConfig.Webhooks) and to the processor (Config.Webhooks), which
// binds it to JetStream and runs its consumer.
type Webhooks struct {
	base string
	key  []byte

	mu        sync.Mutex
	stream    jetstream.Stream // WEBHOOKS, once bound
	js        jetstream.JetStream
	log       *slog.Logger
	delivered *prometheus.CounterVec // api, result
	since     time.Time              // where the consumer (re)starts
	subs      map[string]map[chan provider.WebhookDelivery]struct{}
	// funcs: a slice, not a set: a job has one wait at a time, and a map
	// per waiting job would cost 10,000 waits ~2 MB.
	funcs map[string][]*webhookFunc
}

// webhookFunc is one WatchFunc.
type webhookFunc struct {
	fn func(provider.WebhookDelivery)
}

var (
	_ provider.WebhookSource     = (*Webhooks)(nil)
	_ provider.WebhookFuncSource = (*Webhooks)(nil)
)

// NewWebhooks returns the source whose URLs start with baseURL (the public
// base URL of ingest, -webhook-url) and whose Cog tokens are keyed with key
// (provider.WebhookKey).
func NewWebhooks(baseURL string, key []byte) (*Webhooks, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: -webhook-url must be an absolute http(s) URL without query (ingest's public base URL)", ErrInvalidConfig)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: webhooks need a key (provider.WebhookKey)", ErrInvalidConfig)
	}
	return &Webhooks{
		base:  strings.TrimSuffix(u.String(), "/"),
		key:   append([]byte(nil), key...),
		subs:  map[string]map[chan provider.WebhookDelivery]struct{}{},
		funcs: map[string][]*webhookFunc{},
	}, nil
}

// URL implements provider.WebhookSource: ingest's
// /v1/webhooks/cog/<job>/<n>?token=... or /v1/webhooks/replicate?job=<job>.
func (w *Webhooks) URL(api, job string, n int) string {
	if api == envelope.WebhookCog {
		return w.base + provider.CogWebhookPath(job, n) + "?token=" + provider.CogWebhookToken(w.key, job, n)
	}
	return w.base + "/v1/webhooks/" + api + "?job=" + url.QueryEscape(job)
}

// bind connects w to JetStream and registers its metrics; New calls it.
func (w *Webhooks) bind(js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) error {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "beamline_processor_webhook_deliveries_total",
		Help: "Webhook deliveries read from WEBHOOKS, by api and result: delivered (to a call waiting here) or not_waiting (no call of this process waits for the job).",
	}, []string{"api", "result"})
	if err := reg.Register(c); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.js, w.log, w.delivered = js, log, c
	w.since = time.Now().Add(-webhookRewind)
	return nil
}

// setup applies the WEBHOOKS stream and opens it (trySetup).
func (w *Webhooks) setup(ctx context.Context) error {
	w.mu.Lock()
	js := w.js
	w.mu.Unlock()
	if err := jsm.ApplyWebhooks(ctx, js); err != nil {
		return err
	}
	st, err := js.Stream(ctx, streams.Webhooks)
	if err != nil {
		return fmt.Errorf("processor: open stream %s: %w", streams.Webhooks, err)
	}
	w.mu.Lock()
	w.stream = st
	w.mu.Unlock()
	return nil
}

func (w *Webhooks) openStream() jetstream.Stream {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stream
}

// Watch implements provider.WebhookSource.
func (w *Webhooks) Watch(api, job string) (<-chan provider.WebhookDelivery, func()) {
	c := make(chan provider.WebhookDelivery, webhookBuffer)
	k := api + "." + job
	w.mu.Lock()
	if w.subs[k] == nil {
		w.subs[k] = map[chan provider.WebhookDelivery]struct{}{}
	}
	w.subs[k][c] = struct{}{}
	w.mu.Unlock()
	return c, func() {
		w.mu.Lock()
		delete(w.subs[k], c)
		if len(w.subs[k]) == 0 {
			delete(w.subs, k)
		}
		w.mu.Unlock()
	}
}

// WatchFunc implements provider.WebhookFuncSource: a parked wait
// (provider.Parker) is handed its deliveries without a channel or a
// goroutine. fn is called under w.mu, from dispatch.
func (w *Webhooks) WatchFunc(api, job string, fn func(provider.WebhookDelivery)) func() {
	f := &webhookFunc{fn: fn}
	k := api + "." + job
	w.mu.Lock()
	w.funcs[k] = append(w.funcs[k], f)
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		fs := w.funcs[k]
		i := slices.Index(fs, f)
		if i < 0 {
			return // stopped already
		}
		if len(fs) == 1 {
			delete(w.funcs, k)
			return
		}
		w.funcs[k] = slices.Delete(fs, i, i+1)
	}
}

// errWebhooksUnbound: LastFinal before setup opened the stream.
var errWebhooksUnbound = errors.New("processor: the WEBHOOKS stream is not open")

// LastFinal implements provider.WebhookSource with one direct get (last
// message of webhooks.<api>.<job>.final).
func (w *Webhooks) LastFinal(ctx context.Context, api, job string) (provider.WebhookDelivery, bool, error) {
	st := w.openStream()
	if st == nil {
		return provider.WebhookDelivery{}, false, errWebhooksUnbound
	}
	m, err := st.GetLastMsgForSubject(ctx, envelope.WebhookSubject(api, job, true))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return provider.WebhookDelivery{}, false, nil
	}
	if err != nil {
		return provider.WebhookDelivery{}, false, fmt.Errorf("processor: last webhook of %s: %w", job, err)
	}
	return provider.WebhookDelivery{Body: m.Data, Final: true}, true, nil
}

// dispatch hands a stored delivery to the calls watching its job. It
// never blocks: a full channel loses its oldest update to make room for a
// final delivery, and an update when there is no room.
func (w *Webhooks) dispatch(subject string, body []byte) {
	api, job, final, err := envelope.ParseWebhookSubject(subject)
	if err != nil {
		return // not ingest's; nothing to do with it
	}
	d := provider.WebhookDelivery{Body: body, Final: final}
	w.mu.Lock()
	defer w.mu.Unlock()
	subs, funcs := w.subs[api+"."+job], w.funcs[api+"."+job]
	if len(subs) == 0 && len(funcs) == 0 {
		w.delivered.WithLabelValues(api, "not_waiting").Inc()
		return
	}
	w.delivered.WithLabelValues(api, "delivered").Inc()
	for _, f := range funcs {
		f.fn(d)
	}
	for c := range subs {
		select {
		case c <- d:
		default:
			if final {
				select {
				case <-c:
				default:
				}
				c <- d // only dispatch sends, under w.mu: there is room now
			}
		}
	}
}

// run is the supervised child that reads WEBHOOKS with one ordered
// consumer and dispatches each delivery. The consumer starts a little
// before the processor did (and, after a restart, at the last delivery
// read), and recreates itself when the server loses it; an error ends run
// and the supervisor restarts it.
func (w *Webhooks) run(ctx context.Context) error {
	st := w.openStream()
	if st == nil {
		return errWebhooksUnbound
	}
	w.mu.Lock()
	since := w.since
	w.mu.Unlock()
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{envelope.WebhookFilter},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return fmt.Errorf("processor: webhook consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("processor: webhook consumer: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("processor: webhook consumer: %w", err)
		}
		if md, err := msg.Metadata(); err == nil {
			w.mu.Lock()
			w.since = md.Timestamp
			w.mu.Unlock()
		}
		w.dispatch(msg.Subject(), msg.Data())
	}
}
