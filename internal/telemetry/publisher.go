package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// ErrInvalidConfig is wrapped by configuration errors of the publisher and
// the aggregator.
var ErrInvalidConfig = errors.New("telemetry: invalid config")

// MetricsSubjectPrefix is the core NATS subject prefix of metric samples:
// beamline.metrics.<service>.<instance>. Samples are not stored.
const MetricsSubjectPrefix = "beamline.metrics."

// Metric family names the live admin figures are derived from. They are
// the names the services register; the publisher sends these by default.
const (
	FamilyConsumerPending    = "beamline_consumer_pending"
	FamilyConsumerAckPending = "beamline_consumer_ack_pending"
	FamilyInflight           = "beamline_processor_inflight"
	FamilyDLQ                = "beamline_dlq_messages"
	FamilyBreakerState       = "beamline_breaker_state"
	FamilySupervisorRestarts = "beamline_supervisor_restarts_total"
	FamilyConnections        = "beamline_notifier_connections"
	FamilyJobs               = "beamline_processor_jobs_total"
)

// DefaultFamilies are the families a Publisher sends when Config.Families
// is empty.
var DefaultFamilies = []string{
	FamilyConsumerPending, FamilyConsumerAckPending, FamilyInflight, FamilyDLQ, FamilyBreakerState,
	FamilySupervisorRestarts, FamilyConnections, FamilyJobs,
}

// Sample is one published gathering of a process's registry.
type Sample struct {
	Service  string              `json:"service"`
	Instance string              `json:"instance"`
	At       time.Time           `json:"at"`
	Families map[string][]Series `json:"families"`
}

// Series is one labelled value of a family: the value of a counter or gauge,
// the count of a histogram or summary (Sum then holds its sum).
type Series struct {
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"`
	Sum    float64           `json:"sum,omitempty"`
}

// PublisherConfig configures a Publisher. Service and Gatherer are required.
type PublisherConfig struct {
	// Service is the binary's name (ingest, processor, notifier): a subject
	// token.
	Service string
	// Instance identifies this process; default a random id.
	Instance string
	// Gatherer is the process's own registry, the one /metrics serves.
	Gatherer prometheus.Gatherer
	// Families selects what is sent; default DefaultFamilies. Families
	// the registry does not have are skipped.
	Families []string
	// Interval between samples; default 1s.
	Interval time.Duration
	// Logger; default discards.
	Logger *slog.Logger
}

// Publisher gathers its process's registry every Interval and publishes
// the selected families on beamline.metrics.<service>.<instance>, so live
// dashboards read the same instruments /metrics serves.
type Publisher struct {
	cfg     PublisherConfig
	nc      *nats.Conn
	subject string
	want    map[string]bool
}

// NewPublisher validates cfg and returns a Publisher; Run starts it.
func NewPublisher(nc *nats.Conn, cfg PublisherConfig) (*Publisher, error) {
	if nc == nil || cfg.Gatherer == nil {
		return nil, fmt.Errorf("%w: a NATS connection and a Gatherer are required", ErrInvalidConfig)
	}
	if !token(cfg.Service) {
		return nil, fmt.Errorf("%w: Service %q is not a subject token", ErrInvalidConfig, cfg.Service)
	}
	if cfg.Instance == "" {
		cfg.Instance = NewInstanceID()
	} else if !token(cfg.Instance) {
		return nil, fmt.Errorf("%w: Instance %q is not a subject token", ErrInvalidConfig, cfg.Instance)
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("%w: Interval must be > 0", ErrInvalidConfig)
	}
	if len(cfg.Families) == 0 {
		cfg.Families = DefaultFamilies
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{cfg: cfg, nc: nc, subject: MetricsSubjectPrefix + cfg.Service + "." + cfg.Instance, want: map[string]bool{}}
	for _, f := range cfg.Families {
		p.want[f] = true
	}
	return p, nil
}

// Run publishes a sample at once and then every Interval until ctx is done.
// A failed publish (NATS away) is skipped; the next tick tries again.
func (p *Publisher) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		if err := p.PublishOnce(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			p.cfg.Logger.Debug("metrics sample not published", "subject", p.subject, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// PublishOnce gathers and publishes one sample.
func (p *Publisher) PublishOnce() error {
	s, err := p.Sample()
	if err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return p.nc.Publish(p.subject, b)
}

// Sample gathers the selected families now.
func (p *Publisher) Sample() (Sample, error) {
	mfs, err := p.cfg.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return Sample{}, fmt.Errorf("telemetry: gather: %w", err)
	}
	s := Sample{Service: p.cfg.Service, Instance: p.cfg.Instance, At: time.Now().UTC(), Families: map[string][]Series{}}
	for _, mf := range mfs {
		if !p.want[mf.GetName()] {
			continue
		}
		series := make([]Series, 0, len(mf.GetMetric()))
		for _, m := range mf.GetMetric() {
			series = append(series, seriesOf(mf.GetType(), m))
		}
		s.Families[mf.GetName()] = series
	}
	return s, nil
}

func seriesOf(t dto.MetricType, m *dto.Metric) Series {
	var s Series
	if len(m.GetLabel()) > 0 {
		s.Labels = make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			s.Labels[l.GetName()] = l.GetValue()
		}
	}
	switch t {
	case dto.MetricType_COUNTER:
		s.Value = m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		s.Value = m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		s.Value = float64(m.GetHistogram().GetSampleCount())
		s.Sum = m.GetHistogram().GetSampleSum()
	case dto.MetricType_SUMMARY:
		s.Value = float64(m.GetSummary().GetSampleCount())
		s.Sum = m.GetSummary().GetSampleSum()
	default:
		s.Value = m.GetUntyped().GetValue()
	}
	return s
}

// NewInstanceID is a random 12-hex-digit process id.
func NewInstanceID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func token(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
