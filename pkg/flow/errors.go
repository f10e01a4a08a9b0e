package flow

import (
	"errors"
	"time"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalidConfig is wrapped by every configuration validation error.
	ErrInvalidConfig = errors.New("flow: invalid config")
	// ErrRestartIntensity is wrapped by the error a Supervisor returns when
	// its children restarted more than MaxRestarts times within Period. It is
	// the supervisor escalating the failure to its parent.
	ErrRestartIntensity = errors.New("flow: restart intensity exceeded")
	// ErrBreakerOpen is wrapped by the error Breaker.Do returns when the
	// circuit is open (or half-open with all probe slots taken). The error is
	// classified retryable and carries a RetryAfterHint when one is known.
	ErrBreakerOpen = errors.New("flow: circuit breaker is open")
	// ErrMailboxFull is returned by Mailbox.Send when the key's queue is full.
	ErrMailboxFull = errors.New("flow: mailbox full")
	// ErrMailboxClosed is returned by Mailbox.Send and Mailbox.Run once the
	// mailbox has shut down.
	ErrMailboxClosed = errors.New("flow: mailbox closed")
	// ErrAlreadyRunning is returned by Run when the same value is already
	// running.
	ErrAlreadyRunning = errors.New("flow: already running")
	// ErrShutdownTimeout is wrapped by the Err of a ChildAbandoned event: the
	// child did not return within its Shutdown after being cancelled.
	ErrShutdownTimeout = errors.New("flow: child ignored its context past its shutdown timeout")
)

// class is a failure class attached to an error by Retryable or Terminal.
type class int

const (
	classRetryable class = iota + 1
	classTerminal
)

// classified is implemented by the error wrappers that carry a class, so that
// the outermost classification wins when wrappers are nested.
type classified interface {
	error
	flowClass() class
}

var (
	_ classified = (*RetryableError)(nil)
	_ classified = (*TerminalError)(nil)
)

// RetryableError marks Err as transient: the same work may succeed later.
// RetryAfter, when positive, is a hint for how long to wait (for example from
// an HTTP Retry-After header or a circuit breaker's open timeout).
type RetryableError struct {
	Err        error
	RetryAfter time.Duration
}

func (e *RetryableError) Error() string    { return e.Err.Error() }
func (e *RetryableError) Unwrap() error    { return e.Err }
func (e *RetryableError) flowClass() class { return classRetryable }

// TerminalError marks Err as permanent: retrying the same work cannot succeed
// (invalid input, rejected by the provider's policy, ...). Work that fails
// with a terminal error should be dead-lettered, not redelivered.
type TerminalError struct {
	Err error
}

func (e *TerminalError) Error() string    { return e.Err.Error() }
func (e *TerminalError) Unwrap() error    { return e.Err }
func (e *TerminalError) flowClass() class { return classTerminal }

// Retryable classifies err as retryable with an optional retryAfter hint
// (0 = no hint). It returns nil when err is nil. The message of err is kept
// unchanged.
func Retryable(err error, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	return &RetryableError{Err: err, RetryAfter: retryAfter}
}

// Terminal classifies err as terminal. It returns nil when err is nil. The
// message of err is kept unchanged.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &TerminalError{Err: err}
}

// IsTerminal reports whether err was explicitly classified terminal with
// Terminal. Everything else — unclassified errors, panics (*PanicError),
// timeouts (*TimeoutError), an open breaker — is retryable: when in doubt,
// redeliver, and let the redelivery limit dead-letter what never succeeds.
//
// When classifications are nested, the outermost one wins:
// IsTerminal(Retryable(Terminal(err), 0)) is false.
func IsTerminal(err error) bool {
	var c classified
	return errors.As(err, &c) && c.flowClass() == classTerminal
}

// RetryAfterHint returns the RetryAfter of the outermost classification of
// err if that classification is retryable and carries a positive hint.
func RetryAfterHint(err error) (time.Duration, bool) {
	var c classified
	if !errors.As(err, &c) {
		return 0, false
	}
	r, ok := c.(*RetryableError)
	if !ok || r.RetryAfter <= 0 {
		return 0, false
	}
	return r.RetryAfter, true
}
