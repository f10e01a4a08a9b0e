// Package provider defines how the processor calls the outside service that
// does a job's work (a GPU farm, Replicate, Modal, ...), and holds the
// implementations: sim (a simulated provider driven by input.sim), http,
// cog (Cog model servers) and replicate (the hosted Replicate API).
package provider

import (
	"context"
	"encoding/json"

	"github.com/beamline/beamline/pkg/envelope"
)

// Request is one attempt at one job.
type Request struct {
	Job envelope.Job
	// Attempt is 1 for the first delivery of the job, 2 for the second, ...
	Attempt int
	// Progress reports progress in percent (0..100). It may be nil. It must
	// be cheap to call; the processor turns calls into progress events.
	Progress func(percent int)
	// Prediction is the job's prediction number for Resumer.Start (see
	// Handle.Number); 0 for Call, where providers number by Attempt.
	Prediction int
}

// Provider does the work of a job. Call returns the job's result (a JSON
// value) or an error classified with flow.Retryable / flow.Terminal: a
// transient failure (timeout, 5xx, 429, connection error) is retryable,
// with flow.RetryAfterHint set when the provider said when to come back; a
// failure that retrying cannot fix (4xx, invalid input) is terminal. An
// unclassified error counts as retryable. Call must return when ctx ends.
type Provider interface {
	Name() string
	Call(ctx context.Context, req Request) (json.RawMessage, error)
}

// Resumer is implemented by providers whose work runs remotely and outlives
// the call that started it (a Cog prediction, a Replicate prediction). The
// processor then calls Start, stores the returned Handle durably (the
// job_handles bucket) and only then Awaits it; a run redelivered after its
// processor crashed finds the stored handle and Awaits it again instead of
// starting new work (docs/design.md, "Remote work survives a crash"). A
// provider without Resumer is called with Call, as before.
//
// Start and Await classify their errors like Call. Await must return when
// ctx ends WITHOUT cancelling the remote work: whether to cancel (a DELETE,
// a timeout) or to leave it for the next run to resume (a shutdown) is the
// processor's decision, made with Cancel.
type Resumer interface {
	Provider
	// Start starts the remote work of req as its prediction number
	// req.Prediction and returns its handle. Starting the same job and
	// number twice must not start a second piece of work where the remote
	// side allows it (Cog: the id derives from both, and PUT is
	// idempotent); Handle.Number is req.Prediction.
	Start(ctx context.Context, req Request) (Handle, error)
	// Await waits for the outcome of the work h names, reporting progress
	// through req.Progress. It works in a process other than the one that
	// called Start (a resume after a crash).
	Await(ctx context.Context, req Request, h Handle) (json.RawMessage, error)
	// Cancel asks the remote side to stop the work h names; best effort:
	// work that already ended is not an error.
	Cancel(ctx context.Context, h Handle) error
}

// ConditionalResumer is implemented by a Resumer whose configuration
// decides whether its work survives the process that awaits it: CanResume
// false (a cog provider without a webhook receiver, whose outcome comes
// only in the response of a synchronous PUT that Cog cancels when the
// connection drops) makes it an ordinary Provider.
type ConditionalResumer interface {
	CanResume() bool
}

// AsResumer returns p as a Resumer when it is one that can resume.
func AsResumer(p Provider) (Resumer, bool) {
	r, ok := p.(Resumer)
	if !ok {
		return nil, false
	}
	if c, ok := p.(ConditionalResumer); ok && !c.CanResume() {
		return nil, false
	}
	return r, true
}

// Handle names one piece of remote work of a job, so that any process can
// await or cancel it. It is stored as JSON.
type Handle struct {
	// Provider is the provider's Name().
	Provider string `json:"provider"`
	// RemoteID is the remote side's id of the work (a prediction id).
	RemoteID string `json:"remote_id"`
	// Server is the base URL of the server that holds the work, when the
	// provider spreads work over several (Cog's idempotency is per server).
	Server string `json:"server,omitempty"`
	// GetURL and CancelURL are where the work is read and cancelled, when
	// the remote API gives them (Replicate's urls.get and urls.cancel).
	GetURL    string `json:"get_url,omitempty"`
	CancelURL string `json:"cancel_url,omitempty"`
	// Number is the job's prediction number at this provider: 1 for its
	// first piece of remote work; only work that ended without a result
	// (failed, canceled, timed out) makes the next one 2, 3, ... A
	// processor crash does not: the next run resumes the same work.
	Number int `json:"number"`
	// Attempt is the processor attempt (run) that started the work.
	Attempt int `json:"attempt"`
	// Ended is set by the processor once the work is over without a
	// result the job kept: the next run starts prediction Number+1.
	Ended bool `json:"ended,omitempty"`
}
