package ingest

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are ingest's Prometheus series, registered on the Registerer New
// is given.
type metrics struct {
	requests      *prometheus.CounterVec   // route, code
	duration      *prometheus.HistogramVec // route
	submitted     *prometheus.CounterVec   // kind, priority
	rejected      *prometheus.CounterVec   // reason
	inflight      prometheus.Gauge
	hooksInflight prometheus.Gauge

	webhooks        *prometheus.CounterVec   // api, result
	webhooksDropped *prometheus.CounterVec   // api, reason
	webhookLag      *prometheus.HistogramVec // api
	unindexed       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_ingest_requests_total",
			Help: "HTTP requests answered by ingest, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "beamline_ingest_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_ingest_jobs_submitted_total",
			Help: "Jobs accepted (202 after the PubAck, duplicates not counted), by kind and priority.",
		}, []string{"kind", "priority"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_ingest_rejected_total",
			Help: "Submissions refused, by reason (the error code of the answer).",
		}, []string{"reason"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beamline_ingest_inflight",
			Help: "Submissions being handled now (bounded by -max-inflight).",
		}),
		hooksInflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beamline_ingest_webhooks_inflight",
			Help: "Provider webhooks being handled now (bounded by -max-inflight-webhooks).",
		}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_ingest_webhooks_total",
			Help: "Webhook deliveries, by api (cog, replicate) and result: stored, duplicate (stored before), dropped, or refused_<error code>.",
		}, []string{"api", "result"}),
		webhooksDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_ingest_webhooks_dropped_total",
			Help: "Webhook deliveries acknowledged but not stored, by api and reason (unknown_job, finished_job).",
		}, []string{"api", "reason"}),
		webhookLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "beamline_ingest_webhook_lag_seconds",
			Help:    "From a signed webhook's timestamp (when the provider sent it) to its storage in JetStream, by api.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"api"}),
		unindexed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "beamline_ingest_unindexed_total",
			Help: "Jobs stored whose JOBINDEX entry could not be written (they run, but GET /v1/jobs does not list them).",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.submitted, m.rejected, m.inflight, m.hooksInflight, m.webhooks, m.webhooksDropped, m.webhookLag, m.unindexed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument counts and times the requests of one route.
func (m *metrics) instrument(route string, h http.Handler) http.Handler {
	dur := m.duration.WithLabelValues(route)
	count := routeCounters{vec: m.requests, route: route}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		dur.Observe(time.Since(start).Seconds())
		count.of(rec.code).Inc()
	})
}

// routeCounters are one route's children of beamline_ingest_requests_total,
// one per status code, each looked up in the vector (label values hashed,
// the code formatted) the first time the route answers with that code and
// remembered, so that a series appears exactly when it did before: on its
// first request.
type routeCounters struct {
	vec   *prometheus.CounterVec
	route string
	codes [600]atomic.Pointer[prometheus.Counter]
}

func (c *routeCounters) of(code int) prometheus.Counter {
	if code < 0 || code >= len(c.codes) {
		return c.vec.WithLabelValues(c.route, strconv.Itoa(code))
	}
	if p := c.codes[code].Load(); p != nil {
		return *p
	}
	ctr := c.vec.WithLabelValues(c.route, strconv.Itoa(code))
	c.codes[code].Store(&ctr)
	return ctr
}
