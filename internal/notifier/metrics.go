package notifier

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connections   prometheus.Gauge
	joins         *prometheus.CounterVec
	pushes        prometheus.Counter
	disconnects   *prometheus.CounterVec
	latency       prometheus.Histogram
	subscriptions prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beamline_notifier_connections", Help: "Open WebSocket connections.",
		}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_notifier_joins_total", Help: "Channel joins by topic kind and result.",
		}, []string{"topic_kind", "result"}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "beamline_notifier_pushes_total", Help: "Event frames written to clients.",
		}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beamline_notifier_disconnects_total", Help: "Closed connections by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "beamline_notifier_push_latency_seconds",
			Help:    "From the event's time to its frame written to the socket.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beamline_notifier_nats_subscriptions", Help: "Core NATS subscriptions held for joined topics.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connections, m.joins, m.pushes, m.disconnects, m.latency, m.subscriptions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
