package provider

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with errors.Is. Every error a provider returns
// from Call is also classified with flow.Retryable or flow.Terminal; the
// sentinels say what happened, the classification says what to do about it.
var (
	// ErrUnknownProvider is wrapped by New when the provider name is not one
	// of Names().
	ErrUnknownProvider = errors.New("provider: unknown provider")
	// ErrInvalidConfig is wrapped by every configuration validation error of
	// NewSim, NewHTTP and New.
	ErrInvalidConfig = errors.New("provider: invalid config")
	// ErrInvalidSim is wrapped (terminal) when a job's input.sim cannot be
	// interpreted: wrong types, negative numbers, unknown knobs, a duration
	// over MaxSimDuration.
	ErrInvalidSim = errors.New("provider: invalid input.sim")
	// ErrSimulated is wrapped by the failures the sim provider makes up on
	// purpose (fail_times, fail: "terminal").
	ErrSimulated = errors.New("provider: simulated failure")
	// ErrInvalidResponse is wrapped (retryable) when an http provider answers
	// 2xx with a body that is not what the protocol says: invalid JSON, an
	// ndjson stream that ends without a result line, a malformed line.
	ErrInvalidResponse = errors.New("provider: invalid response")
	// ErrResponseTooLarge is wrapped (terminal) when a successful response
	// (or one ndjson line) is larger than HTTPConfig.MaxResponse.
	ErrResponseTooLarge = errors.New("provider: response too large")
	// ErrTimeout is wrapped (retryable) when the http provider gave up
	// waiting for the remote side after HTTPConfig.Timeout.
	ErrTimeout = errors.New("provider: timed out")
	// ErrRemote is wrapped by the failure an ndjson stream reports in its
	// final {"error":...} line.
	ErrRemote = errors.New("provider: remote failure")
)

// StatusError is an http provider answer with a non-2xx status. It is
// classified terminal for 4xx (except 408, 425 and 429) and retryable
// otherwise. Body is a short, sanitised snippet of the response body.
type StatusError struct {
	StatusCode int
	Body       string
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("provider: http status %d", e.StatusCode)
	}
	return fmt.Sprintf("provider: http status %d: %s", e.StatusCode, e.Body)
}
