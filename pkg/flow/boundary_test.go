package flow_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

func TestBoundaryDo(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		fn      func(ctx context.Context) error
		check   func(t *testing.T, err error)
	}{
		{
			name: "success",
			fn:   func(context.Context) error { return nil },
			check: func(t *testing.T, err error) {
				if err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:    "error passes through",
			timeout: time.Second,
			fn:      func(context.Context) error { return flow.Terminal(errBase) },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, errBase) || !flow.IsTerminal(err) {
					t.Fatalf("got %v", err)
				}
			},
		},
		{
			name: "panic becomes PanicError",
			fn:   func(context.Context) error { panic("boom") },
			check: func(t *testing.T, err error) {
				var pe *flow.PanicError
				if !errors.As(err, &pe) || pe.Value != "boom" || len(pe.Stack) == 0 || flow.IsTerminal(err) {
					t.Fatalf("got %#v", err)
				}
			},
		},
		{
			name:    "panic with error value unwraps, with timeout",
			timeout: time.Second,
			fn:      func(context.Context) error { panic(fmt.Errorf("wrapped: %w", errBase)) },
			check: func(t *testing.T, err error) {
				var pe *flow.PanicError
				if !errors.As(err, &pe) || !errors.Is(err, errBase) {
					t.Fatalf("got %v", err)
				}
			},
		},
		{
			name:    "fn honouring ctx times out",
			timeout: time.Second,
			fn: func(ctx context.Context) error {
				<-ctx.Done()
				return fmt.Errorf("provider call: %w", ctx.Err())
			},
			check: func(t *testing.T, err error) {
				var te *flow.TimeoutError
				if !errors.As(err, &te) || te.Timeout != time.Second || !errors.Is(err, context.DeadlineExceeded) || flow.IsTerminal(err) {
					t.Fatalf("got %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tt.check(t, flow.Boundary{Timeout: tt.timeout}.Do(context.Background(), tt.fn))
			})
		})
	}
}

// A fn that ignores its context must not hold Do past the timeout.
func TestBoundaryAbandonsStuckFn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release, finished := make(chan struct{}), make(chan struct{})
		start := time.Now()
		err := flow.Boundary{Timeout: time.Second}.Do(context.Background(), func(context.Context) error {
			defer close(finished)
			<-release // ignores ctx
			return nil
		})
		if _, ok := errors.AsType[*flow.TimeoutError](err); !ok {
			t.Fatalf("got %v, want *TimeoutError", err)
		}
		if elapsed := time.Since(start); elapsed != time.Second {
			t.Errorf("Do returned after %v, want exactly the timeout (fake time)", elapsed)
		}
		close(release) // the abandoned goroutine finishes on its own
		<-finished
	})
}

func TestBoundaryCallerCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Millisecond, cancel)
		err := flow.Boundary{Timeout: time.Hour}.Do(ctx, func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if _, ok := errors.AsType[*flow.TimeoutError](err); ok {
			t.Fatal("caller cancellation must not be reported as a timeout")
		}
	})
}
