package ingest

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/beamline/beamline/internal/httpx"
)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("ingest: invalid config")

// Error codes of the JSON error body. They are part of the API
// (api/openapi.yaml lists them); clients switch on them, not on messages.
const (
	CodeInvalidJSON           = "invalid_json"
	CodeInvalidKind           = "invalid_kind"
	CodeUnknownKind           = "unknown_kind"
	CodeInvalidPriority       = "invalid_priority"
	CodeInvalidInput          = "invalid_input"
	CodeInvalidID             = "invalid_id"
	CodeInvalidIdempotencyKey = "invalid_idempotency_key"
	CodeUnauthorized          = "unauthorized"
	CodeForbidden             = "forbidden"
	CodeNotFound              = "not_found"
	CodeMethodNotAllowed      = "method_not_allowed"
	CodeAlreadyTerminal       = "already_terminal"
	CodeTooLarge              = "too_large"
	CodeBatchTooLarge         = "batch_too_large"
	CodeInvalidQuery          = "invalid_query"
	CodeInvalidCursor         = "invalid_cursor"
	CodeInvalidSchedule       = "invalid_schedule"
	CodeNotRerunnable         = "not_rerunnable"
	CodeInvalidName           = "invalid_name"
	CodeInvalidCron           = "invalid_cron"
	CodeUnsupportedMediaType  = "unsupported_media_type"
	CodeOverloaded            = "overloaded"
	CodeQueueFull             = "queue_full"
	CodeUnavailable           = "unavailable"
	CodeInternal              = "internal"
	CodeRangeNotSatisfiable   = "range_not_satisfiable"
	CodePreconditionFailed    = "precondition_failed"
)

// Retry-After values, in whole seconds.
const (
	retryInFlight    = 1 * time.Second
	retryQueueFull   = 5 * time.Second
	retryUnavailable = 2 * time.Second
)

// apiError is an HTTP error answer: status, code and a message safe to show
// the client (it never holds a token or an internal address).
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration // > 0 adds a Retry-After header
	// Challenge, when set, is the WWW-Authenticate header of a 401.
	Challenge string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Message: msg}
}

// writeError is the one place error answers are written:
// {"error":{"code":"...","message":"..."}} plus Retry-After or
// WWW-Authenticate where the status calls for it.
func writeError(w http.ResponseWriter, e *apiError) {
	h := w.Header()
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	if e.Challenge != "" {
		h.Set("WWW-Authenticate", e.Challenge)
	}
	httpx.WriteError(w, e.Status, e.Code, e.Message)
}
