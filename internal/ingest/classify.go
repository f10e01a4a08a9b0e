package ingest

import (
	"errors"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
)

// JetStream error codes (nats-server's jetstream_errors_generated.go) that
// mean "the stream is full": with discard new, a publish beyond max_msgs or
// max_bytes is refused with JSStreamStoreFailedF (10077) and the store's
// message ("maximum messages exceeded", "maximum bytes exceeded", "maximum
// messages per subject exceeded"); the account or server running out of
// room is 10002 / 10028 / 10047.
const (
	jsErrStoreFailed        jetstream.ErrorCode = 10077
	jsErrAccountResources   jetstream.ErrorCode = 10002
	jsErrMemoryResources    jetstream.ErrorCode = 10028
	jsErrStorageResources   jetstream.ErrorCode = 10047
	jsErrInsufficientRes    jetstream.ErrorCode = 10023
	jsErrMessageSizeTooLong                     = jetstream.JSErrCodeStreamMessageExceedsMaximum
)

// classifyNATS turns an error of a publish or KV call into the answer the
// client gets. It is the one place NATS failures are classified:
//
//   - the stream is full (discard new) or out of resources → 429 queue_full;
//   - the message is larger than the stream or server allows → 413;
//   - anything else (no connection, no responders, timeout, no leader, …)
//     means the job could not be stored now → 503 unavailable.
//
// Every such answer carries Retry-After except 413.
func classifyNATS(err error) *apiError {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsErrStoreFailed:
			d := strings.ToLower(apiErr.Description)
			switch {
			case strings.Contains(d, "maximum messages"), strings.Contains(d, "maximum bytes"):
				return queueFull()
			case strings.Contains(d, "message size") || strings.Contains(d, "too large"):
				return tooLarge("the job is larger than the queue accepts")
			}
		case jsErrAccountResources, jsErrMemoryResources, jsErrStorageResources, jsErrInsufficientRes:
			return queueFull()
		case jsErrMessageSizeTooLong:
			return tooLarge("the job is larger than the queue accepts")
		}
	}
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, envelope.ErrTooLarge) {
		return tooLarge("the job is larger than the queue accepts")
	}
	return unavailable()
}

func queueFull() *apiError {
	e := newError(http.StatusTooManyRequests, CodeQueueFull, "the job queue is full; retry later")
	e.RetryAfter = retryQueueFull
	return e
}

func unavailable() *apiError {
	e := newError(http.StatusServiceUnavailable, CodeUnavailable, "the job store is unavailable; retry later")
	e.RetryAfter = retryUnavailable
	return e
}

func tooLarge(msg string) *apiError {
	return newError(http.StatusRequestEntityTooLarge, CodeTooLarge, msg)
}
