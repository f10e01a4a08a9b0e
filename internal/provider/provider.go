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
	// Preview reports an intermediate output of a call still running: the
	// prediction's output so far (a JSON value holding data: or http(s)
	// URLs, as Cog and Replicate report it while processing; the newest
	// is the last). It may be nil. It must be cheap to call and the value
	// must not be modified afterwards; the processor stores the latest
	// one, throttled, and announces it with a progress event
	// (docs/design.md#live-previews).
	Preview func(output json.RawMessage)
	// Prediction is the job's prediction number for Resumable.Start (see
	// Handle.Number); 0 for Call, where providers number by Attempt.
	Prediction int
	// Timing, when set, receives the times a terminal remote prediction
	// reports (cog, replicate). It may be nil.
	Timing func(Timing)
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
