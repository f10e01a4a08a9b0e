package flow

import (
	"context"
	"time"
)

// Observer receives the outcome of one operation measured by Span: its name,
// how long it took and the error it returned (nil on success). Observers are
// the telemetry hook of this package: adapt them to slog, Prometheus
// histograms or trace spans. They are called synchronously on the caller's
// goroutine, so they must be cheap and must not block.
type Observer func(ctx context.Context, name string, d time.Duration, err error)

// Observers combines several observers into one that calls each in order.
// Nil observers are skipped.
func Observers(obs ...Observer) Observer {
	return func(ctx context.Context, name string, d time.Duration, err error) {
		for _, o := range obs {
			if o != nil {
				o(ctx, name, d, err)
			}
		}
	}
}

// Span runs fn, reports its name, duration and error to obs (nil obs is
// allowed) and returns fn's error. If fn panics, obs sees a *PanicError and
// the panic continues: Span measures, it does not contain — wrap fn in a
// Boundary for that.
func Span(ctx context.Context, name string, obs Observer, fn func(ctx context.Context) error) (err error) {
	if obs == nil {
		return fn(ctx)
	}
	start := time.Now()
	panicked := true
	defer func() {
		if panicked {
			r := recover()
			obs(ctx, name, time.Since(start), newPanicError(r))
			panic(r)
		}
	}()
	err = fn(ctx)
	panicked = false
	obs(ctx, name, time.Since(start), err)
	return err
}
