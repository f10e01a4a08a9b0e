package flow

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"
)

// Boundary is an error boundary around one unit of work — the Go form of
// "let it crash": whatever happens inside fn, Do returns an ordinary error
// that the caller can classify, and the caller's goroutine survives.
//
// The zero Boundary only contains panics.
type Boundary struct {
	// Timeout bounds how long Do waits for fn. 0 means no timeout.
	Timeout time.Duration
}

// PanicError is the error Boundary.Do (and the Supervisor and Mailbox)
// return when the function they ran panicked. Panics are classified
// retryable: a crash says nothing about whether the same input would crash
// again, and the redelivery limit takes care of poison input.
type PanicError struct {
	// Value is the value passed to panic.
	Value any
	// Stack is the stack of the panicking goroutine, from runtime/debug.Stack.
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("flow: panic: %v", e.Value) }

// Unwrap returns Value if it is an error (for example a runtime.Error), so
// errors.Is and errors.As see through the panic.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// newPanicError must be called from the deferred function that recovered r,
// so that the stack is the panicking one.
func newPanicError(r any) *PanicError {
	return &PanicError{Value: r, Stack: debug.Stack()}
}

// TimeoutError is the error Boundary.Do returns when fn did not finish within
// Boundary.Timeout. It is classified retryable and matches
// context.DeadlineExceeded with errors.Is.
type TimeoutError struct {
	Timeout time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("flow: timed out after %v", e.Timeout)
}

// Unwrap returns context.DeadlineExceeded.
func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// Do runs fn and returns:
//
//   - fn's error (nil on success) if fn returns in time;
//   - a *PanicError if fn panics;
//   - a *TimeoutError if Timeout > 0 and fn has not returned Timeout after
//     the call started (also when fn itself returns the deadline error of the
//     context Do gave it);
//   - ctx.Err() if ctx is done before fn returns.
//
// With a Timeout, fn runs on its own goroutine and receives a context that is
// cancelled at the deadline. A well-behaved fn returns promptly then. A fn
// that ignores its context cannot be stopped — Go has no way to kill a
// goroutine — so Do does not wait for it: Do returns at the deadline and the
// stuck goroutine is left to finish on its own, its result discarded. Each
// such abandoned call costs one goroutine until fn returns; callers that see
// many TimeoutErrors should bound the number of calls in flight (Limiter).
//
// Without a Timeout, fn runs on the caller's goroutine and Do returns only
// when fn does.
func (b Boundary) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	if b.Timeout <= 0 {
		return call(ctx, fn)
	}
	tctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	done := make(chan error, 1) // buffered: an abandoned fn can always deliver and exit
	go func() { done <- call(tctx, fn) }()

	select {
	case err := <-done:
		return b.result(ctx, tctx, err)
	case <-tctx.Done():
		select {
		case err := <-done: // fn returned just as the deadline hit: prefer its result
			return b.result(ctx, tctx, err)
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return &TimeoutError{Timeout: b.Timeout}
	}
}

// result reports fn's own deadline error as a *TimeoutError when the deadline
// was Do's, not the caller's.
func (b Boundary) result(ctx, tctx context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil &&
		errors.Is(tctx.Err(), context.DeadlineExceeded) {
		return &TimeoutError{Timeout: b.Timeout}
	}
	return err
}

// call runs fn on the current goroutine, converting a panic into *PanicError.
func call(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = newPanicError(r)
		}
	}()
	return fn(ctx)
}
