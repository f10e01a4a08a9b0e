package provider

import (
	"context"
	"encoding/json"
)

// Handle names remote work a provider started: what the processor stores
// with the job before it waits, so that a later attempt (after a crash)
// resumes the work instead of starting it again. It is JSON so it can live
// in the job's state.
type Handle struct {
	Provider  string `json:"provider"`
	ID        string `json:"id"`
	GetURL    string `json:"get_url,omitempty"`
	CancelURL string `json:"cancel_url,omitempty"`
	Attempt   int    `json:"attempt"`
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
