package flow_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

func failWith(err error) func(context.Context) error {
	return func(context.Context) error { return err }
}

func TestBreakerTrips(t *testing.T) {
	tests := []struct {
		name     string
		failure  error
		wantOpen bool
	}{
		{"provider errors trip", errBase, true},
		{"panics-as-errors trip", &flow.PanicError{Value: "x"}, true},
		{"terminal errors do not trip", flow.Terminal(errBase), false},
		{"caller cancellation does not trip", context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := flow.NewBreaker(flow.BreakerConfig{Name: "p", ConsecutiveFailures: 3, OpenTimeout: time.Minute})
				for range 3 {
					if err := b.Do(context.Background(), failWith(tt.failure)); !errors.Is(err, tt.failure) {
						t.Fatalf("Do = %v, want fn's error", err)
					}
				}
				if got := b.State() == flow.BreakerOpen; got != tt.wantOpen {
					t.Fatalf("state = %v, want open = %v", b.State(), tt.wantOpen)
				}
			})
		})
	}
}

// A provider that is down fails (nearly) every call: at the default volume
// and ratio the breaker opens; below the volume it does not, whatever the
// share of failures.
func TestBreakerTripsOnFailureRatio(t *testing.T) {
	tests := []struct {
		name           string
		calls, failing int
		wantOpen       bool
	}{
		{"every call fails", 20, 20, true},
		{"half of the volume fails", 20, 10, true},
		{"below the ratio", 40, 19, false},
		{"below the volume", 19, 19, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := flow.NewBreaker(flow.BreakerConfig{Name: "p"})
				// Successes first, so the ratio is judged on the whole volume.
				for i := range tt.calls {
					var err error
					if i >= tt.calls-tt.failing {
						err = errBase
					}
					_ = b.Do(context.Background(), failWith(err))
					time.Sleep(10 * time.Millisecond)
				}
				if got := b.State() == flow.BreakerOpen; got != tt.wantOpen {
					t.Fatalf("state = %v after %d of %d calls failed, want open = %v", b.State(), tt.failing, tt.calls, tt.wantOpen)
				}
			})
		})
	}
}

// Per-request failures on a healthy provider — 30% of the calls failing, in
// runs of six — never open a breaker with the default settings (the old
// "5 consecutive failures" rule opened it on the first run).
func TestBreakerDefaultsIgnorePerRequestFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opened := 0
		b := flow.NewBreaker(flow.BreakerConfig{Name: "sim", OnStateChange: func(_ string, _, to flow.BreakerState) {
			if to == flow.BreakerOpen {
				opened++
			}
		}})
		for i := range 2000 {
			var err error
			if i%20 < 6 {
				err = errBase
			}
			if got := b.Do(context.Background(), failWith(err)); errors.Is(got, flow.ErrBreakerOpen) {
				t.Fatalf("call %d refused: %v", i, got)
			}
			time.Sleep(20 * time.Millisecond) // 50 calls/s: the window holds 500
		}
		if opened > 0 {
			t.Fatalf("breaker opened %d times", opened)
		}
	})
}

// Failures age out of the rolling window: a burst long ago plus a few
// failures now does not open it.
func TestBreakerWindowForgetsOldFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := flow.NewBreaker(flow.BreakerConfig{Name: "p", Interval: 10 * time.Second})
		ctx := context.Background()
		for range 15 {
			_ = b.Do(ctx, failWith(nil))
		}
		for range 15 {
			_ = b.Do(ctx, failWith(errBase)) // 15 of 30: would open now
			time.Sleep(time.Millisecond)
		}
		if b.State() != flow.BreakerOpen {
			t.Fatalf("state = %v, want open", b.State())
		}
		b2 := flow.NewBreaker(flow.BreakerConfig{Name: "p2", Interval: 10 * time.Second})
		for range 12 {
			_ = b2.Do(ctx, failWith(errBase)) // below the volume
		}
		time.Sleep(11 * time.Second) // ... and out of the window
		for range 10 {
			_ = b2.Do(ctx, failWith(nil))
		}
		for range 9 {
			_ = b2.Do(ctx, failWith(errBase)) // 9 of 19 in the window
		}
		_ = b2.Do(ctx, failWith(nil))
		if b2.State() != flow.BreakerClosed {
			t.Fatalf("state = %v: failures older than the window counted", b2.State())
		}
	})
}

// Half-open lets DefaultBreakerMaxRequests probes through, and closes only
// after that many succeeded.
func TestBreakerDefaultProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := flow.NewBreaker(flow.BreakerConfig{MinRequests: 1})
		ctx := context.Background()
		_ = b.Do(ctx, failWith(errBase))
		if b.State() != flow.BreakerOpen {
			t.Fatalf("state = %v, want open", b.State())
		}
		time.Sleep(flow.DefaultBreakerOpenTimeout + time.Millisecond)
		for i := range flow.DefaultBreakerMaxRequests {
			if b.State() != flow.BreakerHalfOpen {
				t.Fatalf("probe %d: state = %v, want half-open", i, b.State())
			}
			if err := b.Do(ctx, failWith(nil)); err != nil {
				t.Fatalf("probe %d: %v", i, err)
			}
		}
		if b.State() != flow.BreakerClosed {
			t.Fatalf("state = %v after %d good probes, want closed", b.State(), flow.DefaultBreakerMaxRequests)
		}
	})
}

func TestBreakerOpenError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := flow.NewBreaker(flow.BreakerConfig{Name: "modal", ConsecutiveFailures: 1, OpenTimeout: time.Minute})
		_ = b.Do(context.Background(), failWith(errBase))
		time.Sleep(10 * time.Second)

		called := false
		err := b.Do(context.Background(), func(context.Context) error { called = true; return nil })
		if called {
			t.Fatal("fn called while open")
		}
		if !errors.Is(err, flow.ErrBreakerOpen) || flow.IsTerminal(err) {
			t.Fatalf("got %v, want retryable ErrBreakerOpen", err)
		}
		if hint, ok := flow.RetryAfterHint(err); !ok || hint != 50*time.Second {
			t.Errorf("RetryAfterHint = %v, %v; want 50s (time left open)", hint, ok)
		}
	})
}

func TestBreakerRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu          sync.Mutex
			transitions []string
		)
		b := flow.NewBreaker(flow.BreakerConfig{
			Name: "p", ConsecutiveFailures: 2, MaxRequests: 2, OpenTimeout: time.Second,
			OnStateChange: func(name string, from, to flow.BreakerState) {
				mu.Lock()
				defer mu.Unlock()
				transitions = append(transitions, fmt.Sprintf("%s:%v->%v", name, from, to))
			},
		})
		ctx := context.Background()
		_ = b.Do(ctx, failWith(errBase))
		_ = b.Do(ctx, failWith(errBase))
		time.Sleep(time.Second + time.Nanosecond)
		if b.State() != flow.BreakerHalfOpen {
			t.Fatalf("state = %v, want half-open", b.State())
		}
		_ = b.Do(ctx, failWith(nil))
		_ = b.Do(ctx, failWith(nil))
		if b.State() != flow.BreakerClosed {
			t.Fatalf("state = %v, want closed", b.State())
		}
		want := []string{"p:closed->open", "p:open->half-open", "p:half-open->closed"}
		if fmt.Sprint(transitions) != fmt.Sprint(want) {
			t.Errorf("transitions = %v, want %v", transitions, want)
		}
	})
}

func TestBreakerHalfOpenLimitsProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := flow.NewBreaker(flow.BreakerConfig{ConsecutiveFailures: 1, MaxRequests: 1, OpenTimeout: time.Second})
		_ = b.Do(context.Background(), failWith(errBase))
		time.Sleep(2 * time.Second)

		release := make(chan struct{})
		go func() { _ = b.Do(context.Background(), func(context.Context) error { <-release; return nil }) }()
		synctest.Wait() // the probe is in flight
		err := b.Do(context.Background(), failWith(nil))
		if !errors.Is(err, flow.ErrBreakerOpen) || flow.IsTerminal(err) {
			t.Errorf("second probe: got %v, want retryable ErrBreakerOpen", err)
		}
		close(release)
	})
}

func TestBreakerDoCancelledContext(t *testing.T) {
	b := flow.NewBreaker(flow.BreakerConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Do(ctx, failWith(nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestBreakerWaitAllowed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := flow.NewBreaker(flow.BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: 30 * time.Second})
		ctx := context.Background()
		if err := b.WaitAllowed(ctx); err != nil {
			t.Fatalf("closed breaker: %v", err)
		}
		_ = b.Do(ctx, failWith(errBase))
		start := time.Now()
		if err := b.WaitAllowed(ctx); err != nil {
			t.Fatal(err)
		}
		if elapsed := time.Since(start); elapsed < 30*time.Second {
			t.Errorf("WaitAllowed returned after %v, before the open timeout", elapsed)
		}
		if b.State() != flow.BreakerHalfOpen {
			t.Errorf("state = %v, want half-open", b.State())
		}
	})
}

func TestBreakerWaitAllowedContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := flow.NewBreaker(flow.BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
		_ = b.Do(context.Background(), failWith(errBase))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := b.WaitAllowed(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want context.DeadlineExceeded", err)
		}
	})
}

func TestBreakerStateString(t *testing.T) {
	for s, want := range map[flow.BreakerState]string{
		flow.BreakerClosed: "closed", flow.BreakerHalfOpen: "half-open", flow.BreakerOpen: "open", 9: "BreakerState(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
}
