package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/pkg/envelope"
)

// DefaultPreviewInterval is the least time between two stored previews of
// one job.
const DefaultPreviewInterval = 500 * time.Millisecond

// PreviewKeeper stores a running job's intermediate output (a data: or
// http(s) URL) as its live preview, replacing the previous one, and
// returns its reference (outputs.Previewer).
type PreviewKeeper interface {
	Preview(ctx context.Context, job, url string) (envelope.Preview, error)
}

// previews turns a provider's Preview calls into stored previews, each
// announced by a progress event (docs/design.md#live-previews). Like
// progress, a call only records the output: one goroutine per job at a
// time stores the newest, and
//
//   - it stores at most one every interval (a model that yields an image
//     per step, a webhook per output: the later ones supersede the
//     earlier, so only the newest is worth the bytes);
//   - it stores only an output that changed (a poll that sees the same
//     output again stores nothing);
//   - a preview still waiting for its turn when the call ends is dropped:
//     the result names the finished output.
//
// A preview that cannot be stored is logged and forgotten; it never
// changes the job's outcome.
type previews struct {
	job      string
	keep     PreviewKeeper
	show     func(envelope.Preview)
	interval time.Duration
	log      *slog.Logger
	parent   context.Context
	// ctx (from parent) and cancel exist once a preview is to be stored:
	// a call that reports none costs no context.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	raw    json.RawMessage // the provider's newest output, as reported
	latest string          // its newest output URL
	done   string          // the URL last stored (or tried)
	last   time.Time       // when that store started
	busy   bool
	closed bool
	wg     sync.WaitGroup
}

// newPreviews returns nil (a nil hook: providers skip previews) when no
// PreviewKeeper is configured. ctx is the job's context; close cancels
// what is in flight.
func (p *Processor) newPreviews(ctx context.Context, d *delivery, prog *progress, log *slog.Logger) *previews {
	if p.cfg.Previews == nil {
		return nil
	}
	return &previews{
		job:      d.job.ID,
		keep:     p.cfg.Previews,
		show:     prog.showPreview,
		interval: p.cfg.PreviewInterval,
		log:      log,
		parent:   ctx,
	}
}

// hook is the provider's Request.Preview; nil when v is.
func (v *previews) hook() func(json.RawMessage) {
	if v == nil {
		return nil
	}
	return v.report
}

func (v *previews) report(output json.RawMessage) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed || bytes.Equal(output, v.raw) {
		return
	}
	v.raw = output
	u := outputs.LatestURL(output)
	if u == "" {
		return
	}
	v.latest = u
	if v.busy || u == v.done {
		return
	}
	if v.ctx == nil {
		v.ctx, v.cancel = context.WithCancel(v.parent)
	}
	v.busy = true
	v.wg.Add(1)
	go v.loop()
}

func (v *previews) loop() {
	defer v.wg.Done()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		v.mu.Lock()
		if v.closed || v.latest == v.done {
			v.busy = false
			v.mu.Unlock()
			return
		}
		if wait := time.Until(v.last.Add(v.interval)); !v.last.IsZero() && wait > 0 {
			v.mu.Unlock()
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-v.ctx.Done():
				// Closed: whatever waited is dropped (the loop sees closed).
			}
			continue
		}
		u := v.latest
		v.done, v.last = u, time.Now()
		v.mu.Unlock()

		pv, err := v.keep.Preview(v.ctx, v.job, u)
		switch {
		case err != nil && v.ctx.Err() == nil:
			v.log.Warn("preview not stored", "err", err)
		case err == nil && v.ctx.Err() == nil:
			v.show(pv)
		}
	}
}

// close drops what waits, cancels a store in flight and waits for the
// goroutine, so that no preview is announced after the call's progress
// events are flushed (progress.close comes after it).
func (v *previews) close() {
	if v == nil {
		return
	}
	v.mu.Lock()
	v.closed = true
	cancel := v.cancel
	v.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	v.wg.Wait()
}
