package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// AdminTopic is the notifier topic the aggregator broadcasts to, and
// AdminEvent the event name of its pushes.
const (
	AdminTopic = "admin:metrics"
	AdminEvent = "metrics"
)

// AdminMetrics is the payload of an admin:metrics push. The web dashboard
// is coded against this shape.
type AdminMetrics struct {
	At string `json:"at"`
	// QueueDepth is what waits in JOBS, delivered to no processor yet
	// (the consumers' num_pending).
	QueueDepth QueueDepth `json:"queue_depth"`
	// Held is what processors hold: delivered, not acked yet (the
	// consumers' num_ack_pending) — the jobs running and those waiting in
	// a processor for a slot (a user's limit, a breaker, a free worker).
	Held QueueDepth `json:"held"`
	// Inflight is how many jobs run now, across processors (part of Held).
	Inflight            int64             `json:"inflight"`
	JobsPerSecond       JobRates          `json:"jobs_per_second"`
	Breakers            map[string]string `json:"breakers"`
	SupervisorRestarts  int64             `json:"supervisor_restarts"`
	DLQ                 int64             `json:"dlq"`
	NotifierConnections int64             `json:"notifier_connections"`
}

// QueueDepth is a number of jobs per priority.
type QueueDepth struct {
	High   int64 `json:"high"`
	Normal int64 `json:"normal"`
	Low    int64 `json:"low"`
}

// JobRates are jobs per second by outcome, across processors.
type JobRates struct {
	Succeeded float64 `json:"succeeded"`
	Failed    float64 `json:"failed"`
	Retried   float64 `json:"retried"`
	Dead      float64 `json:"dead"`
}

// Broadcaster sends a push to every client joined to a topic
// (*notifier.Service is one).
type Broadcaster interface {
	Broadcast(topic, event string, payload any) error
}

// AggregatorConfig configures an Aggregator. Zero values are defaults.
type AggregatorConfig struct {
	// Interval between broadcasts; default 1s.
	Interval time.Duration
	// Expire drops an instance silent for longer; default 5s.
	Expire time.Duration
	// Logger; default discards.
	Logger *slog.Logger
}

// Aggregator subscribes to every process's metric samples, keeps the latest
// per instance and broadcasts the pipeline's live figures on admin:metrics.
type Aggregator struct {
	cfg AggregatorConfig
	nc  *nats.Conn
	out Broadcaster

	mu   sync.Mutex
	inst map[string]*instanceState // by subject
}

type instanceState struct {
	seen   time.Time // local receipt
	sample Sample
	rates  JobRates
}

// NewAggregator validates cfg; Run starts it.
func NewAggregator(nc *nats.Conn, out Broadcaster, cfg AggregatorConfig) (*Aggregator, error) {
	if nc == nil || out == nil {
		return nil, fmt.Errorf("%w: a NATS connection and a Broadcaster are required", ErrInvalidConfig)
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Expire == 0 {
		cfg.Expire = 5 * time.Second
	}
	if cfg.Interval < 0 || cfg.Expire < 0 {
		return nil, fmt.Errorf("%w: Interval and Expire must be > 0", ErrInvalidConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Aggregator{cfg: cfg, nc: nc, out: out, inst: map[string]*instanceState{}}, nil
}

// Run subscribes to beamline.metrics.> and broadcasts every Interval until
// ctx is done.
func (a *Aggregator) Run(ctx context.Context) error {
	sub, err := a.nc.Subscribe(MetricsSubjectPrefix+">", func(m *nats.Msg) { a.receive(m.Subject, m.Data, time.Now()) })
	if err != nil {
		return fmt.Errorf("telemetry: subscribe metrics: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := a.out.Broadcast(AdminTopic, AdminEvent, a.Figures(time.Now())); err != nil {
			a.cfg.Logger.Warn("admin metrics not broadcast", "err", err)
		}
	}
}

func (a *Aggregator) receive(subject string, data []byte, now time.Time) {
	var s Sample
	if err := json.Unmarshal(data, &s); err != nil {
		a.cfg.Logger.Debug("undecodable metrics sample", "subject", subject, "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.inst[subject]
	if st == nil {
		st = &instanceState{}
		a.inst[subject] = st
	} else if dt := s.At.Sub(st.sample.At).Seconds(); dt > 0 {
		st.rates = jobRates(st.sample, s, dt)
	}
	st.seen, st.sample = now, s
}

// jobRates derives jobs/s by outcome from two samples' job counters.
func jobRates(prev, cur Sample, dt float64) JobRates {
	p, c := outcomeTotals(prev), outcomeTotals(cur)
	rate := func(k string) float64 {
		d := c[k] - p[k]
		if d < 0 { // counter reset: the process restarted
			d = c[k]
		}
		return d / dt
	}
	return JobRates{Succeeded: rate("succeeded"), Failed: rate("failed"), Retried: rate("retried"), Dead: rate("dead")}
}

func outcomeTotals(s Sample) map[string]float64 {
	out := map[string]float64{}
	for _, se := range s.Families[FamilyJobs] {
		out[se.Labels["outcome"]] += se.Value
	}
	return out
}

var breakerNames = [...]string{"closed", "half-open", "open"}

// Figures computes the admin payload from the instances heard from within
// Expire of now. Shared figures that every processor reads alike (consumer
// pending, DLQ size) take the highest report; per-process figures add up.
func (a *Aggregator) Figures(now time.Time) AdminMetrics {
	out := AdminMetrics{At: now.UTC().Format(time.RFC3339), Breakers: map[string]string{}}
	pending := map[string]float64{}    // consumer → highest report
	ackPending := map[string]float64{} // consumer → highest report
	breakers := map[string]float64{}
	var dlq float64
	a.mu.Lock()
	for subj, st := range a.inst {
		if now.Sub(st.seen) > a.cfg.Expire {
			delete(a.inst, subj)
			continue
		}
		f := st.sample.Families
		for _, se := range f[FamilyConsumerPending] {
			c := se.Labels["consumer"]
			pending[c] = math.Max(pending[c], se.Value)
		}
		for _, se := range f[FamilyConsumerAckPending] {
			c := se.Labels["consumer"]
			ackPending[c] = math.Max(ackPending[c], se.Value)
		}
		for _, se := range f[FamilyBreakerState] {
			p := se.Labels["provider"]
			breakers[p] = math.Max(breakers[p], se.Value)
		}
		for _, se := range f[FamilyDLQ] {
			dlq = math.Max(dlq, se.Value)
		}
		out.Inflight += sum(f[FamilyInflight])
		out.SupervisorRestarts += sum(f[FamilySupervisorRestarts])
		out.NotifierConnections += sum(f[FamilyConnections])
		out.JobsPerSecond.Succeeded += st.rates.Succeeded
		out.JobsPerSecond.Failed += st.rates.Failed
		out.JobsPerSecond.Retried += st.rates.Retried
		out.JobsPerSecond.Dead += st.rates.Dead
	}
	a.mu.Unlock()
	out.QueueDepth = byPriority(pending)
	out.Held = byPriority(ackPending)
	for p, v := range breakers {
		i := min(max(int(v), 0), len(breakerNames)-1)
		out.Breakers[p] = breakerNames[i]
	}
	out.DLQ = int64(dlq)
	return out
}

// byPriority adds up per-consumer figures by the priority in the
// consumer's name (proc-<priority>-<kind>).
func byPriority(perConsumer map[string]float64) QueueDepth {
	var q QueueDepth
	for c, n := range perConsumer {
		rest, ok := strings.CutPrefix(c, "proc-")
		if !ok {
			continue
		}
		prio, _, _ := strings.Cut(rest, "-")
		switch prio {
		case "high":
			q.High += int64(n)
		case "normal":
			q.Normal += int64(n)
		case "low":
			q.Low += int64(n)
		}
	}
	return q
}

func sum(ss []Series) int64 {
	var n float64
	for _, s := range ss {
		n += s.Value
	}
	return int64(n)
}
