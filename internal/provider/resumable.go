package provider

import (
	"context"
	"encoding/json"
)

// Handle names remote work a provider started: what the processor stores
// with the job before it waits, so that a later attempt (after a crash)
// resumes the work instead of starting it again. It is JSON so it can live
// in the job's state.
//
// The processor stores it in the job_handles bucket, not in the job's
// snapshot (docs/design.md, "Remote work survives a crash").
type Handle struct {
	// Provider is the provider's Name().
	Provider string `json:"provider"`
	// ID is the remote side's id of the work (a prediction id).
	ID string `json:"id"`
	// GetURL and CancelURL are where the work is read and cancelled, when
	// the remote API gives them.
	GetURL    string `json:"get_url,omitempty"`
	CancelURL string `json:"cancel_url,omitempty"`
	// Attempt is the processor attempt (run) that started the work.
	Attempt int `json:"attempt"`
	// Server is the base URL of the server that holds the work, when the
	// provider spreads work over several (Cog's idempotency is per server).
	Server string `json:"server,omitempty"`
	// Number is the job's prediction number at this provider
	// (Request.Prediction): 1 for its first piece of remote work; only
	// work that ended without a result (failed, canceled, timed out) makes
	// the next one 2, 3, ... A processor crash does not: the next run
	// resumes the same work. The processor sets it when Start leaves it 0.
	Number int `json:"number,omitempty"`
	// Ended is set by the processor once the work is over without a
	// result the job kept: the next run starts prediction Number+1.
	Ended bool `json:"ended,omitempty"`
	// Starts counts the Starts the processor made for the job, this one
	// included (set by the processor; telemetry).
	Starts int `json:"starts,omitempty"`
}

// Resumable is implemented by providers whose remote work outlives a Call.
// Call is Start, then Await, then Cancel when ctx ended first. A caller
// that stores the Handle between Start and Await (the processor, with the
// job's state) can, after a crash, Await the same work again instead of
// calling Start a second time.
type Resumable interface {
	Provider
	// Start creates the remote work and returns its handle as soon as the
	// remote side named it. Errors are classified as Call's.
	Start(ctx context.Context, req Request) (Handle, error)
	// Await waits for the work h names and returns its outcome, classified
	// as Call's. It does not cancel the work when ctx ends.
	Await(ctx context.Context, h Handle, req Request) (json.RawMessage, error)
	// Cancel asks the remote side to stop the work h names; best effort.
	Cancel(ctx context.Context, h Handle) error
}

// ConditionalResumable is implemented by a Resumable whose configuration
// decides whether its work survives the process that awaits it: CanResume
// false (a cog provider without webhooks, -webhook-url, whose outcome comes
// only in the response of a synchronous PUT that Cog cancels when the
// connection drops) makes it an ordinary Provider for the processor.
type ConditionalResumable interface {
	CanResume() bool
}

// AsResumable returns p as a Resumable when it is one that can resume.
func AsResumable(p Provider) (Resumable, bool) {
	r, ok := p.(Resumable)
	if !ok {
		return nil, false
	}
	if c, ok := p.(ConditionalResumable); ok && !c.CanResume() {
		return nil, false
	}
	return r, true
}

// Parker is a Resumable that can await its work without a goroutine while
// nothing happens (docs/design.md#waiting-jobs-hold-no-worker): the
// processor holds thousands of waits at once.
type Parker interface {
	Resumable
	// Park waits for the work h names as Await does, but returns at once:
	// done is called exactly once, never from within Park, on a goroutine
	// that may block, with what Await would have returned. A panic of the
	// wait is reported to done as a *flow.PanicError.
	Park(ctx context.Context, h Handle, req Request, done func(json.RawMessage, error))
}
