package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/flow"
)

// OutputKeeper stores the outputs a result names and returns the result
// that names them instead (outputs.Keeper). A result with no output is
// returned unchanged. Its errors are classified (flow.Terminal: the job
// fails; anything else: it is retried).
type OutputKeeper interface {
	Keep(ctx context.Context, job string, result []byte) ([]byte, error)
}

// keepOutputs runs after a successful provider call and before its outcome
// is written: the result's output URLs (Replicate's expire within the hour)
// become stored outputs, or the call's success becomes the keeper's error.
// jctx is the job's context, so a cancel or a shutdown stops a download.
func (p *Processor) keepOutputs(jctx context.Context, d *delivery, result json.RawMessage, log *slog.Logger) (json.RawMessage, error) {
	if p.cfg.Outputs == nil || len(result) == 0 {
		return result, nil
	}
	if ps := p.cfg.OutputProviders; len(ps) > 0 && !slices.Contains(ps, provider.Family(p.kindProviders[d.job.Kind].Name())) {
		return result, nil
	}
	kept, err := p.cfg.Outputs.Keep(jctx, d.job.ID, result)
	if err != nil {
		log.Warn("outputs not stored", "err", err)
		if errors.Is(err, outputs.ErrGone) {
			return nil, p.outputsGone(jctx, d, err, log)
		}
		return nil, err
	}
	p.countOutputBytes(d, kept) // telemetry.go
	return kept, nil
}

// outputsGone handles outputs the provider no longer serves (a 4xx: an
// expired URL, or one served once and already read by a run that crashed
// before it stored the copy). For a job's own remote work that is not the
// job's failure: the work is marked ended, so the next run starts a new
// prediction (Handle.Number+1) whose outputs are fresh, and the error is
// retryable. Other providers' gone outputs stay terminal.
func (p *Processor) outputsGone(jctx context.Context, d *delivery, err error, log *slog.Logger) error {
	h := d.handle.Load()
	if h == nil {
		return err
	}
	ended := *h
	ended.Ended = true
	ctx, cancel := context.WithTimeout(context.WithoutCancel(jctx), 10*time.Second)
	defer cancel()
	if perr := p.putHandle(ctx, d.job.ID, ended); perr != nil {
		log.Warn("remote work not recorded as ended; the next run resumes it", "remote_id", h.ID, "err", perr)
	}
	return flow.Retryable(fmt.Errorf("processor: outputs of prediction %s are gone, a new prediction follows: %w", h.ID, err), 0)
}
