package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/flow"
)

// Remote work survives a crash (docs/design.md#remote-work-survives-a-crash).
//
// A provider that implements provider.Resumable (and can resume as it is
// configured: provider.AsResumable) is not called with Call: the
// run Starts the remote work, stores its handle in the job_handles bucket
// (key: the job id) and only then Awaits it. The handle is not part of the
// job's snapshot: storing it takes no seq and sends no event (seqs stay
// contiguous with EVENTS), clients never see provider URLs, and the
// snapshot's writes stay exactly what they were.
//
// The next run of the job reads the handle (a first delivery that claimed
// its job skips the read: nobody ran it before):
//
//   - a handle not Ended: the work may still run (its processor crashed, or
//     a shutdown's grace ran out). The run Awaits it, and starts nothing.
//   - an Ended handle: the work is over without a result the job kept. The
//     run starts prediction Number+1.
//   - no handle: prediction 1.
//
// After Await the run settles the handle: every failure but a shutdown
// cancels the remote work (best effort; a no-op for work that ended by
// itself), and every failure but a terminal one, a DELETE and a shutdown
// marks the handle Ended before the outcome is written, so the retry
// starts a new prediction. A shutdown leaves it live: the next
// run, on another processor, resumes it. A success leaves it as it is: the
// job is terminal and no run reads it again.
//
// Attempts still count runs (attempts.go): a crash costs the job an
// attempt, not a prediction.

// setupHandles opens the job_handles bucket when a provider resumes.
func (p *Processor) setupHandles(ctx context.Context) error {
	for _, prov := range p.kindProviders {
		if _, ok := provider.AsResumable(prov); ok {
			kv, err := jsm.JobHandles(ctx, p.js)
			if err != nil {
				return err
			}
			p.handles = kv
			return nil
		}
	}
	return nil
}

// resumer is prov as a Resumable, when it is one and the bucket is open.
func (p *Processor) resumer(prov provider.Provider) (provider.Resumable, bool) {
	r, ok := provider.AsResumable(prov)
	return r, ok && p.handles != nil
}

// storedHandle reads the job's handle; nil when there is none.
func (p *Processor) storedHandle(ctx context.Context, job string) (*provider.Handle, error) {
	e, err := p.handles.Get(ctx, job)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h provider.Handle
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return nil, fmt.Errorf("job_handles %s: %w", job, err)
	}
	return &h, nil
}

func (p *Processor) putHandle(ctx context.Context, job string, h provider.Handle) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = p.handles.Put(ctx, job, b)
	return err
}

// callRemote is the provider call of a Resumable: resume the stored handle's
// work, or start new work and store its handle before awaiting it. sctx is
// the run's store context, ctx the call's (cancelled by a DELETE, the
// timeout, the end of the grace).
func (p *Processor) callRemote(sctx, ctx context.Context, d *delivery, r provider.Resumable, req provider.Request) (json.RawMessage, error) {
	var prev *provider.Handle
	if !d.claimed {
		h, err := p.storedHandle(sctx, d.job.ID)
		if err != nil {
			return nil, flow.Retryable(fmt.Errorf("processor: reading the job's remote handle: %w", err), 0)
		}
		prev = h
	}
	if prev != nil && !prev.Ended && prev.Provider == r.Name() {
		h := *prev
		p.m.remote.WithLabelValues(r.Name(), "resume").Inc()
		return p.awaitHandle(ctx, sctx, d, r, h, req)
	}
	req.Prediction = 1
	starts := 1
	if prev != nil {
		req.Prediction = prev.Number + 1
		starts = prev.Starts + 1
	}
	h, err := r.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	if h.Number == 0 {
		h.Number = req.Prediction
	}
	h.Starts = starts
	p.m.remote.WithLabelValues(r.Name(), "start").Inc()
	if err := p.putHandle(sctx, d.job.ID, h); err != nil {
		// Never wait on work a crash would lose track of: stop it. The
		// next run starts the same prediction number again.
		p.cancelHandle(sctx, r, h, nil)
		return nil, flow.Retryable(fmt.Errorf("processor: storing the job's remote handle: %w", err), 0)
	}
	return p.awaitHandle(ctx, sctx, d, r, h, req)
}

// awaitHandle makes h the run's handle and waits on it. The call runs inside
// the run's boundary, which returns as soon as ctx ends (a DELETE, the job
// timeout) without waiting for this goroutine: settleRemote may then have
// looked for the handle before it was set here. So a run whose ctx ended by
// the time h is set settles h itself (settleRemote is idempotent: a second
// cancel of the same work is a no-op), and remote work is never left running
// unwatched.
//
// The wait holds no worker: the run detaches here, its handle stored, and
// parks — Await runs on a goroutine of its own, the run's goroutines end —
// then rejoins once Await returned (inflight.go).
func (p *Processor) awaitHandle(ctx, sctx context.Context, d *delivery, r provider.Resumable, h provider.Handle, req provider.Request) (json.RawMessage, error) {
	d.handle.Store(&h)
	if err := ctx.Err(); err != nil {
		p.settleRemote(sctx, d, r, err, p.log.With("job", d.job.ID))
		return nil, err
	}
	if p.detach(d) {
		d.wait = &parkedWait{r: r, h: h, req: req}
		return nil, errParked // call parks: the wait goes on without this goroutine
	}
	return r.Await(ctx, h, req)
}

// settleRemote acts on the handle of a finished Await (see above).
func (p *Processor) settleRemote(ctx context.Context, d *delivery, r provider.Resumable, callErr error, log *slog.Logger) {
	h := d.handle.Load()
	if h == nil || callErr == nil {
		return
	}
	switch {
	case d.cancelled.Load():
		p.cancelHandle(ctx, r, *h, log)
		return
	case p.jobBase.Err() != nil:
		return // handed back: the next run resumes it
	}
	// The work may still run (a timeout, a lost connection, a refused
	// re-attach), or run again: a Cog prediction that ended just as a
	// resume re-attached is started again by that PUT, while the resume
	// reports the first run's end. Stop it: the next run starts a new
	// prediction. For work that is over, the cancel is a cheap no-op.
	p.cancelHandle(ctx, r, *h, log)
	if flow.IsTerminal(callErr) {
		return // the job fails; no run reads the handle again
	}
	ended := *h
	ended.Ended = true
	if err := p.putHandle(ctx, d.job.ID, ended); err != nil {
		log.Warn("remote work not recorded as ended; the next run awaits it again", "remote_id", h.ID, "err", err)
	}
}

// cancelStored cancels the live remote work of a job that will not run
// again (cancelled while no processor held it, or out of attempts); best
// effort.
func (p *Processor) cancelStored(ctx context.Context, d *delivery, log *slog.Logger) {
	r, ok := p.resumer(p.kindProviders[d.kind])
	if !ok {
		return // no remote work
	}
	// Not skipped at attempt 0: a run handed back at shutdown stores
	// `retrying` at attempt 0 and leaves its work live for the next run.

	h, err := p.storedHandle(ctx, d.job.ID)
	if err != nil {
		log.Warn("remote handle not read; its work is not cancelled", "err", err)
		return
	}
	if h != nil && !h.Ended && h.Provider == r.Name() {
		p.cancelHandle(ctx, r, *h, log)
	}
}

// cancelHandleTimeout bounds one remote cancel.
const cancelHandleTimeout = 10 * time.Second

func (p *Processor) cancelHandle(ctx context.Context, r provider.Resumable, h provider.Handle, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelHandleTimeout)
	defer cancel()
	p.m.remote.WithLabelValues(r.Name(), "cancel").Inc()
	if err := r.Cancel(ctx, h); err != nil && log != nil {
		log.Warn("remote work not cancelled", "remote_id", h.ID, "err", err)
	}
}
