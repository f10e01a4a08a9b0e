package processor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/beamline/beamline/internal/provider"
)

// Provider health (docs/design.md#provider-health).
//
// Every provider that can tell whether its remote side takes work
// (provider.HealthChecker: the cog provider asks each server's
// GET /health-check) is checked every Config.HealthInterval by the
// "health" child. The last answer:
//
//   - feeds /readyz: a provider none of whose servers can take work makes
//     the processor not ready, with the provider's reason;
//   - gates its kinds like an open breaker: their pullers stop pulling, and
//     a run already pulled waits before its attempt is counted, holding no
//     worker, until a check passes (a DEFUNCT or SETUP_FAILED server does
//     not come back by itself; burning attempts on it would only kill
//     jobs);
//   - inside the provider, keeps the servers that cannot work out of the
//     rotation (cog.go: usable), so jobs go to the others.

// healthState is the last health answer of one provider.
type healthState struct {
	mu      sync.Mutex
	err     error
	checked bool
	changed chan struct{} // closed and replaced when err changes to nil
}

func newHealthState() *healthState { return &healthState{changed: make(chan struct{})} }

func (h *healthState) set(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checked = true
	h.err = err
	if err == nil {
		close(h.changed)
		h.changed = make(chan struct{})
	}
}

func (h *healthState) get() (error, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err, h.changed
}

// waitHealthy waits until the last check passed, or ctx ends.
func (h *healthState) waitHealthy(ctx context.Context) error {
	for {
		err, changed := h.get()
		if err == nil {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// setupHealth makes a healthState for every provider that checks health.
func (p *Processor) setupHealth() {
	p.health = map[string]*healthState{}
	for _, prov := range p.kindProviders {
		if _, ok := prov.(provider.HealthChecker); ok && p.health[prov.Name()] == nil {
			p.health[prov.Name()] = newHealthState()
		}
	}
}

// runHealth is the health child: it checks every provider's health each
// HealthInterval.
func (p *Processor) runHealth(ctx context.Context) error {
	if len(p.health) == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(p.cfg.HealthInterval)
	defer t.Stop()
	for {
		p.checkHealth(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Processor) checkHealth(ctx context.Context) {
	seen := map[string]bool{}
	for _, prov := range p.kindProviders {
		hc, ok := prov.(provider.HealthChecker)
		name := prov.Name()
		if !ok || seen[name] {
			continue
		}
		seen[name] = true
		cctx, cancel := context.WithTimeout(ctx, max(p.cfg.HealthInterval, time.Second))
		err := hc.Health(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		prev, _ := p.health[name].get()
		p.health[name].set(err)
		pl, model := providerLabels(name)
		up, result := 1.0, "ok"
		if err != nil {
			up, result = 0, "failed"
			if prev == nil {
				p.log.Warn("provider not healthy: its kinds wait", "provider", name, "err", err)
			}
		} else if prev != nil {
			p.log.Info("provider healthy again", "provider", name)
		}
		p.m.healthy.WithLabelValues(pl, model).Set(up)
		p.m.healthChecks.WithLabelValues(pl, model, result).Inc()
	}
}

// providersReady is the providers' part of /readyz: every provider's last
// health check passed (or it has none).
func (p *Processor) providersReady() error {
	var why []string
	for name, h := range p.health {
		if err, _ := h.get(); err != nil {
			why = append(why, fmt.Sprintf("provider %s: %v", name, err))
		}
	}
	if len(why) == 0 {
		return nil
	}
	sort.Strings(why)
	return errors.New(strings.Join(why, "; "))
}

// waitHealthy waits, without a worker, until the provider of d's kind is
// healthy; false when the pool drained first (the caller hands d back).
func (p *Processor) waitHealthy(d *delivery) bool {
	h := p.health[p.kindProviders[d.kind].Name()]
	if h == nil {
		return true
	}
	if err, _ := h.get(); err == nil {
		return true
	}
	p.detach(d)
	err := h.waitHealthy(p.stopCtx)
	p.rejoin(d)
	d.away.Store(0)
	return err == nil
}

// waitKindHealthy is the pullers' gate: it waits while kind's provider is
// unhealthy.
func (p *Processor) waitKindHealthy(ctx context.Context, kind string) error {
	if h := p.health[p.kindProviders[kind].Name()]; h != nil {
		return h.waitHealthy(ctx)
	}
	return nil
}
