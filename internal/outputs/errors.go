package outputs

import (
	"errors"
	"fmt"
	"github.com/beamline/beamline/pkg/flow"
)

// Sentinel errors. Every error of Fetch and Keep wraps one of them and is
// classified once, here: flow.Terminal for what no retry can change (the
// output is too large, of a forbidden type, at a forbidden address, gone),
// flow.Retryable for what may pass (a timeout, a 5xx, a lost connection, the
// Object Store briefly unavailable).
var (
	// ErrInvalidConfig wraps every configuration error.
	ErrInvalidConfig = errors.New("outputs: invalid config")
	// ErrTooLarge: the output is larger than the per-object cap.
	ErrTooLarge = errors.New("output too large")
	// ErrForbiddenType: the output's Content-Type is not in the allowlist.
	ErrForbiddenType = errors.New("output content type not allowed")
	// ErrForbiddenAddress: the URL's scheme or the address it resolves to
	// (loopback, private, link-local, unspecified...) is not allowed.
	ErrForbiddenAddress = errors.New("output address not allowed")
	// ErrBadURL: the output URL (or data: URL) cannot be parsed or decoded.
	ErrBadURL = errors.New("bad output URL")
	// ErrGone: the output's server answered a 4xx (the URL expired, say).
	ErrGone = errors.New("output not available")
	// ErrUnavailable: a timeout, a 5xx, a lost connection: try again later.
	ErrUnavailable = errors.New("output download failed")
	// ErrStore: the Object Store did not take or give the object.
	ErrStore = errors.New("output store failed")
	// ErrNotFound: no such stored output.
	ErrNotFound = errors.New("output not found")
	// ErrTooMany: the result names more outputs than Keeper.MaxOutputs.
	ErrTooMany = errors.New("too many outputs")
	// ErrBadSignature: a signed output URL is malformed, forged or expired.
	ErrBadSignature = errors.New("bad output signature")
)

func wrapf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

func flowTerminal(err error) error  { return flow.Terminal(err) }
func flowRetryable(err error) error { return flow.Retryable(err, 0) }
