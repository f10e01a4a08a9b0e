package processor

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"

	"github.com/beamline/beamline/internal/provider"
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
		return nil, err
	}
	p.countOutputBytes(d, kept) // telemetry.go
	return kept, nil
}
