package flow_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// openBreaker returns a breaker with maxRequests probes that is open
// (tripped by one failure) for a second.
func openBreaker(t *testing.T, maxRequests uint32) *flow.Breaker {
	t.Helper()
	b := flow.NewBreaker(flow.BreakerConfig{Name: "p", ConsecutiveFailures: 1, MaxRequests: maxRequests, OpenTimeout: time.Second})
	done, err := b.Allow()
	if err != nil {
		t.Fatalf("closed breaker refused: %v", err)
	}
	done(errBase)
	if s := b.State(); s != flow.BreakerOpen {
		t.Fatalf("state = %v after a failure, want open", s)
	}
	return b
}

// allowAll asks for admission n times and returns the dones of those admitted.
func allowAll(b *flow.Breaker, n int) (dones []func(error)) {
	for range n {
		if done, err := b.Allow(); err == nil {
			dones = append(dones, done)
		}
	}
	return dones
}

func TestBreakerAllowRefusesWhileOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := openBreaker(t, 2)
		done, err := b.Allow()
		if done != nil || !errors.Is(err, flow.ErrBreakerOpen) || flow.IsTerminal(err) {
			t.Fatalf("Allow = (%v, %v), want a retryable ErrBreakerOpen", done != nil, err)
		}
		if h, ok := flow.RetryAfterHint(err); !ok || h <= 0 || h > time.Second {
			t.Fatalf("RetryAfterHint = %v, %v; want the time until half-open", h, ok)
		}
	})
}

// Half-open admits exactly MaxRequests, however many ask; their successes
// close the breaker, after which everything is admitted.
func TestBreakerAllowHalfOpenAdmitsMaxRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := openBreaker(t, 3)
		time.Sleep(time.Second + time.Millisecond)
		dones := allowAll(b, 10)
		if len(dones) != 3 {
			t.Fatalf("half-open admitted %d of 10, want MaxRequests (3)", len(dones))
		}
		if _, err := b.Allow(); !errors.Is(err, flow.ErrBreakerOpen) {
			t.Fatalf("Allow with all probes admitted = %v, want ErrBreakerOpen", err)
		}
		for i, done := range dones {
			if s := b.State(); s != flow.BreakerHalfOpen {
				t.Fatalf("state = %v after %d successes, want half-open", s, i)
			}
			done(nil)
			done(errBase) // ignored: done counts once
		}
		if s := b.State(); s != flow.BreakerClosed {
			t.Fatalf("state = %v after MaxRequests successes, want closed", s)
		}
		if got := allowAll(b, 10); len(got) != 10 {
			t.Fatalf("closed breaker admitted %d of 10", len(got))
		}
	})
}

// done's outcome is classified as Do classifies it.
func TestBreakerAllowDoneOutcome(t *testing.T) {
	tests := []struct {
		name    string
		outcome error
		want    flow.BreakerState // after the one probe (MaxRequests 1) reports
		freed   bool              // another probe may be admitted
	}{
		{"success closes", nil, flow.BreakerClosed, true},
		{"failure reopens", errBase, flow.BreakerOpen, false},
		{"panic reopens", &flow.PanicError{Value: "x"}, flow.BreakerOpen, false},
		{"terminal error is a success", flow.Terminal(errBase), flow.BreakerClosed, true},
		{"cancellation is ignored", context.Canceled, flow.BreakerHalfOpen, true},
		{"not called releases the slot", flow.ErrNotCalled, flow.BreakerHalfOpen, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := openBreaker(t, 1)
				time.Sleep(time.Second + time.Millisecond)
				dones := allowAll(b, 5)
				if len(dones) != 1 {
					t.Fatalf("half-open admitted %d, want 1", len(dones))
				}
				dones[0](tt.outcome)
				if s := b.State(); s != tt.want {
					t.Fatalf("state = %v, want %v", s, tt.want)
				}
				if got := len(allowAll(b, 1)) == 1; got != tt.freed {
					t.Fatalf("admitted after the outcome = %v, want %v", got, tt.freed)
				}
			})
		})
	}
}

// WaitAdmitted sleeps through the open state, and a waiter refused in
// half-open wakes when the probe's admission is released.
func TestBreakerWaitAdmitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := openBreaker(t, 1)
		start := time.Now()
		probe, err := b.WaitAdmitted(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < time.Second {
			t.Fatalf("admitted after %v, before the open timeout", waited)
		}
		got := make(chan func(error))
		go func() {
			done, err := b.WaitAdmitted(context.Background())
			if err != nil {
				t.Error(err)
			}
			got <- done
		}()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("a second probe was admitted while the first was in flight")
		default:
		}
		probe(flow.ErrNotCalled)
		done := <-got
		done(nil)
		if s := b.State(); s != flow.BreakerClosed {
			t.Fatalf("state = %v, want closed", s)
		}
	})
}

func TestBreakerWaitAdmittedContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := openBreaker(t, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if done, err := b.WaitAdmitted(ctx); done != nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitAdmitted = (%v, %v), want the context's error", done != nil, err)
		}
	})
}

// Do still records a panic as a failure, then lets it propagate.
func TestBreakerDoPanicCountsAsFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := flow.NewBreaker(flow.BreakerConfig{Name: "p", ConsecutiveFailures: 1, OpenTimeout: time.Minute})
		func() {
			defer func() {
				if r := recover(); r != "boom" {
					t.Fatalf("recovered %v, want the panic", r)
				}
			}()
			_ = b.Do(context.Background(), func(context.Context) error { panic("boom") })
		}()
		if s := b.State(); s != flow.BreakerOpen {
			t.Fatalf("state = %v after a panic, want open", s)
		}
	})
}
