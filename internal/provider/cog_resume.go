package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// The cog provider is a Resumable: the processor stores the handle Start
// returns and a run redelivered after a crash Awaits the same prediction.
//
// The prediction id is CogPredictionID(job, req.Prediction): the job's
// prediction number, which only a prediction that ended without a result
// increments, not the processor's attempt, which a crash increments too.
// So a crash at any moment, even between the PUT and the handle's store,
// leads the next run to the same id, and Cog's idempotent PUT re-attaches
// to it instead of starting a second prediction.

var (
	_ Resumable            = (*cogProvider)(nil)
	_ ConditionalResumable = (*cogProvider)(nil)
)

// CanResume is true with webhooks. Without, the outcome comes only in the
// response of a synchronous PUT, and Cog cancels that prediction when its
// client goes away: a crash ends it whatever is stored, so the processor
// calls Call as before and stores no handle.
func (p *cogProvider) CanResume() bool { return p.hooks != nil }

// Start creates prediction number req.Prediction of the job. With webhooks
// it is the async PUT (Prefer: respond-async) on a server with a free slot,
// waiting through 409s like Call; the handle names that server. Without
// webhooks nothing is sent: Cog's only way to report an outcome is then
// the synchronous PUT, which Await makes; the handle is stored before the
// prediction exists, which is as early as it gets.
func (p *cogProvider) Start(ctx context.Context, req Request) (Handle, error) {
	if err := ctx.Err(); err != nil {
		return Handle{}, flow.Retryable(fmt.Errorf("cog provider: %w", err), 0)
	}
	n := max(req.Prediction, 1)
	id := CogPredictionID(req.Job.ID, n)
	b, err := p.requestBody(req, id, n)
	if err != nil {
		return Handle{}, err
	}
	h := Handle{Provider: p.name, ID: id, Number: n, Attempt: req.Attempt}
	if p.hooks == nil {
		return h, nil
	}
	_, srv, err := p.create(ctx, id, b, true)
	if err != nil {
		return Handle{}, err
	}
	h.Server = srv.base
	h.CancelURL = srv.base + "/predictions/" + url.PathEscape(id) + "/cancel"
	return h, nil
}

// Await waits for the outcome of prediction h.ID. A final webhook stored
// while nobody waited (ingest keeps them in JetStream; one direct get) is
// the outcome at once, so a prediction that ended while its processor was
// dead is not run again. Otherwise it waits like Call for the prediction's
// webhooks, which Cog sends to ingest whichever process waits, re-attaching
// (a PUT of the same id, to h.Server first) only after Quiet without one.
// When ctx ends, Await returns without cancelling the prediction.
func (p *cogProvider) Await(ctx context.Context, h Handle, req Request) (json.RawMessage, error) {
	id := h.ID
	defer p.unplace(id)
	n := max(h.Number, 1)
	b, err := p.requestBody(req, id, n)
	if err != nil {
		return nil, err
	}
	progress := newRequestTracker(req)
	if p.hooks == nil {
		pred, srv, err := p.create(ctx, id, b, false)
		if err != nil {
			return nil, err
		}
		return p.await(ctx, req.Job.ID, id, b, srv, pred, nil, progress)
	}
	deliveries, stop := p.hooks.Watch(envelope.WebhookCog, req.Job.ID)
	defer stop()
	if out, ok, err := p.alreadyEnded(ctx, req.Job.ID, id, progress); ok {
		return out, err
	}
	p.mu.Lock()
	srv := p.placed[id]
	p.mu.Unlock()
	if srv == nil {
		// A resume: the prediction was started by a process that died. Do
		// not PUT it at once. Cog keeps no finished prediction, so a PUT
		// that lands after its end but before its completed webhook is
		// stored (ingest under load, a slow network) would start it again:
		// the GPU paid twice. Cog sends that webhook to ingest whoever
		// waits, so wait for it; only after Quiet without one does await
		// re-attach (a PUT to the server holding the prediction first),
		// which covers a webhook that never comes.
		if held := p.serverOf(h.Server); held != nil {
			p.place(id, held)
			srv = held
		}
	}
	return p.await(ctx, req.Job.ID, id, b, srv, cogPrediction{}, deliveries, progress)
}

func (p *cogProvider) serverOf(base string) *cogServer {
	for _, s := range p.servers {
		if s.base == base {
			return s
		}
	}
	return nil
}

// Cancel sends POST /predictions/{id}/cancel to the server that holds the
// prediction (to every server when the handle names none: a synchronous
// prediction). A 404 (the prediction already ended) is not an error.
func (p *cogProvider) Cancel(ctx context.Context, h Handle) error {
	targets := p.servers
	if srv := p.serverOf(h.Server); srv != nil {
		targets = []*cogServer{srv}
	}
	var errs []error
	for _, srv := range targets {
		if err := p.cancelOn(ctx, srv, h.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *cogProvider) cancelOn(ctx context.Context, srv *cogServer, id string) error {
	ctx, cancel := context.WithTimeout(ctx, p.reqTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.base+"/predictions/"+url.PathEscape(id)+"/cancel", nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(hreq)
	if err != nil {
		return fmt.Errorf("cog provider: cancel %s on %s: %w", id, srv.base, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("cog provider: cancel %s on %s: %w", id, srv.base, &StatusError{StatusCode: resp.StatusCode})
	}
	return nil
}
