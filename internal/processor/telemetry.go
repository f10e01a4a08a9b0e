package processor

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
)

// Telemetry of remote work (docs/design.md#telemetry): per job, in its
// snapshot (envelope.RemoteStats: predictions started, time queued at the
// provider, run time); in Prometheus, per provider and model, the
// histograms of those times, of the processor's wait, of the starts per
// job at its end, and the output bytes stored.

// reportTiming is the provider.Request.Timing of a run.
func (d *delivery) reportTiming(t provider.Timing) { d.timing.Store(&t) }

// observeRemote records the end of a run's remote work: how long the run
// awaited it, and the times its provider reported.
func (p *Processor) observeRemote(d *delivery, waited time.Duration) {
	h := d.handle.Load()
	if h == nil {
		return
	}
	pl, model := providerLabels(h.Provider)
	p.m.remoteWait.WithLabelValues(pl, model).Observe(waited.Seconds())
	if t := d.timing.Load(); t != nil {
		if t.Queued > 0 {
			p.m.remoteQueued.WithLabelValues(pl, model).Observe(t.Queued.Seconds())
		}
		if t.Run > 0 {
			p.m.remoteRun.WithLabelValues(pl, model).Observe(t.Run.Seconds())
		}
	}
}

// remoteStats is the job's RemoteStats after this run's remote work; nil
// when the run awaited none.
func (d *delivery) remoteStats() *envelope.RemoteStats {
	h := d.handle.Load()
	if h == nil {
		return nil
	}
	// A handle stored before Starts existed: its number is the best
	// count.
	r := &envelope.RemoteStats{Provider: h.Provider, Starts: max(h.Number, 1)}
	if h.Starts > 0 {
		r.Starts = h.Starts
	}
	if t := d.timing.Load(); t != nil {
		r.QueuedMS = t.Queued.Milliseconds()
		r.RunMS = t.Run.Milliseconds()
	}
	return r
}

// withRemoteStats makes a write of the run carry its provider's name
// (every event of the job's timeline says who served its attempt:
// docs/design.md#a-jobs-timeline) and its remote telemetry, and counts the
// job's starts when the write ends it.
func (p *Processor) withRemoteStats(d *delivery, fn jobstore.Mutation) jobstore.Mutation {
	name := ""
	if prov := p.kindProviders[d.kind]; prov != nil {
		name = prov.Name()
	}
	r := d.remoteStats()
	if r == nil {
		return func(s *envelope.Snapshot) error {
			if err := fn(s); err != nil {
				return err
			}
			if name != "" {
				s.Provider = name
			}
			return nil
		}
	}
	return func(s *envelope.Snapshot) error {
		if err := fn(s); err != nil {
			return err
		}
		if name != "" {
			s.Provider = name
		}
		if s.Remote != nil && s.Remote.Provider == r.Provider {
			r.Starts = max(r.Starts, s.Remote.Starts)
		}
		s.Remote = r
		if s.Status.Terminal() && !d.startsCounted {
			d.startsCounted = true
			pl, model := providerLabels(r.Provider)
			p.m.remoteStarts.WithLabelValues(pl, model).Observe(float64(r.Starts))
		}
		return nil
	}
}

// countOutputBytes adds the sizes of the outputs a kept result names.
func (p *Processor) countOutputBytes(d *delivery, kept json.RawMessage) {
	n := outputBytes(d.job.ID, kept)
	if n == 0 {
		return
	}
	pl, model := providerLabels(p.kindProviders[d.kind].Name())
	p.m.outputBytes.WithLabelValues(pl, model).Add(float64(n))
}

// outputBytes sums the size of every stored output (outputs.Output: its
// url is /v1/jobs/<job>/outputs/<name>) in a kept result.
func outputBytes(job string, kept json.RawMessage) int64 {
	prefix := "/v1/jobs/" + job + "/outputs/"
	if !bytes.Contains(kept, []byte(prefix)) {
		return 0 // most results store no output: no decode
	}
	var v any
	if json.Unmarshal(kept, &v) != nil {
		return 0
	}
	var sum int64
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if u, ok := x["url"].(string); ok && strings.HasPrefix(u, prefix) {
				if size, ok := x["size"].(float64); ok && size > 0 {
					sum += int64(size)
					return
				}
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return sum
}
