package processor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/pkg/flow"
)

// Job outcomes, the values of the outcome label of jobs_total.
const (
	outcomeSucceeded = "succeeded"
	outcomeFailed    = "failed"
	outcomeDead      = "dead"
	outcomeRetried   = "retried"
	outcomeCancelled = "cancelled"
	outcomeInvalid   = "invalid"
)

type metrics struct {
	jobs          *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	queueWait     *prometheus.HistogramVec
	attempts      prometheus.Histogram
	providerCalls *prometheus.CounterVec
	breakerState  *prometheus.GaugeVec
	restarts      *prometheus.CounterVec
	supEvents     *prometheus.CounterVec
	panics        *prometheus.CounterVec
	timeouts      *prometheus.CounterVec
	inflight      prometheus.Gauge
	waiting       prometheus.Gauge
	pending       *prometheus.GaugeVec
	ackPending    *prometheus.GaugeVec
	dlq           prometheus.Gauge
	remote        *prometheus.CounterVec
	detached      prometheus.Gauge
	predictions   *prometheus.GaugeVec
	healthy       *prometheus.GaugeVec
	healthChecks  *prometheus.CounterVec
	remoteWait    *prometheus.HistogramVec
	remoteQueued  *prometheus.HistogramVec
	remoteRun     *prometheus.HistogramVec
	remoteStarts  *prometheus.HistogramVec
	outputBytes   *prometheus.CounterVec
}

func newMetrics(registerer prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_processor_jobs_total",
			Help: "Job deliveries handled, by outcome (succeeded, failed, dead, retried, cancelled, invalid).",
		}, []string{"kind", "priority", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "beamline_processor_job_duration_seconds",
			Help:    "Duration of one provider call (one attempt).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"kind"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "beamline_processor_queue_wait_seconds",
			Help:    "Time from a job's created_at to its first start.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"kind", "priority"}),
		attempts: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "beamline_processor_attempts",
			Help:    "Attempts a job took to reach its terminal state.",
			Buckets: []float64{1, 2, 3, 4, 5, 7, 10, 20},
		}),
		providerCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_provider_calls_total",
			Help: "Provider calls by outcome (ok, retryable, terminal, panic, timeout, breaker_open, cancelled).",
		}, []string{"provider", "outcome"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "beamline_breaker_state",
			Help: "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
		}, []string{"provider"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_supervisor_restarts_total",
			Help: "Children restarted by a supervisor.",
		}, []string{"supervisor", "child"}),
		supEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_supervisor_events_total",
			Help: "Supervisor events by kind.",
		}, []string{"supervisor", "event"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_processor_job_panics_total",
			Help: "Provider calls that panicked (contained by the job's boundary).",
		}, []string{"kind"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_processor_job_timeouts_total",
			Help: "Provider calls that hit the job timeout.",
		}, []string{"kind"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beamline_processor_inflight",
			Help: "Jobs running now in this process.",
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beamline_processor_waiting",
			Help: "Jobs parked in the per-user waiting room.",
		}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "beamline_consumer_pending",
			Help: "Messages not yet delivered, per durable consumer (from consumer info).",
		}, []string{"consumer"}),
		ackPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "beamline_consumer_ack_pending",
			Help: "Messages delivered and not yet acknowledged, per durable consumer.",
		}, []string{"consumer"}),
		dlq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beamline_dlq_messages",
			Help: "Messages in the DLQ stream.",
		}),
		remote: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_processor_remote_total",
			Help: "Remote work of resuming providers, by action: start (new work), resume (a run awaiting work a crashed run started), cancel.",
		}, []string{"provider", "action"}),
		detached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beamline_processor_detached",
			Help: "Runs waiting without a worker: on remote work, or for an in-flight slot of their provider.",
		}),
		predictions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "beamline_provider_predictions_inflight",
			Help: "Remote work (predictions) this process starts or awaits, per provider and model; at most -provider-inflight per provider.",
		}, []string{"provider", "model"}),
	}
	m.healthy = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "beamline_provider_healthy",
		Help: "1 when the provider's last health check (cog: GET /health-check of each server) found a server that takes work, 0 when none did.",
	}, []string{"provider", "model"})
	m.healthChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "beamline_provider_health_checks_total",
		Help: "Provider health checks, by result (ok, failed).",
	}, []string{"provider", "model", "result"})
	remoteBuckets := prometheus.ExponentialBuckets(0.05, 2, 14) // 50 ms .. ~7 min
	m.remoteWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "beamline_provider_await_seconds",
		Help:    "How long one run awaited its remote work (start or resume to outcome), per provider and model.",
		Buckets: remoteBuckets,
	}, []string{"provider", "model"})
	m.remoteQueued = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "beamline_provider_queued_seconds",
		Help:    "Time a prediction waited at the provider before it ran (started_at - created_at), per provider and model.",
		Buckets: remoteBuckets,
	}, []string{"provider", "model"})
	m.remoteRun = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "beamline_provider_run_seconds",
		Help:    "A prediction's run time (metrics.predict_time), per provider and model.",
		Buckets: remoteBuckets,
	}, []string{"provider", "model"})
	m.remoteStarts = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "beamline_provider_remote_starts",
		Help:    "Predictions started per job, observed when the job ends; above 1 means a prediction failed or was started again.",
		Buckets: []float64{1, 2, 3, 4, 5, 7, 10},
	}, []string{"provider", "model"})
	m.outputBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "beamline_provider_output_bytes_total",
		Help: "Bytes of outputs stored in the Object Store, per provider and model.",
	}, []string{"provider", "model"})
	for _, c := range []prometheus.Collector{m.detached, m.predictions, m.healthy, m.healthChecks,
		m.remoteWait, m.remoteQueued, m.remoteRun, m.remoteStarts, m.outputBytes, m.jobs, m.duration, m.queueWait, m.attempts, m.providerCalls,
		m.breakerState, m.restarts, m.supEvents, m.panics, m.timeouts, m.inflight, m.waiting, m.pending, m.ackPending, m.dlq, m.remote} {
		if err := registerer.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func breakerValue(s flow.BreakerState) float64 {
	switch s {
	case flow.BreakerHalfOpen:
		return 1
	case flow.BreakerOpen:
		return 2
	default:
		return 0
	}
}
