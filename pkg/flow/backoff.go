package flow

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff returns the delay before retry number attempt (1-based) of an
// exponential backoff with jitter:
//
//   - attempt 1 waits about minDelay, attempt 2 about 2*minDelay, attempt 3
//     about 4*minDelay, ..., never more than maxDelay (attempt < 1 counts as 1);
//   - jitter is the fraction (clamped to [0, 1]) by which the delay is spread
//     around that value: with jitter 0.2 the delay lies in [0.8d, 1.2d], and
//     is then capped at maxDelay — callers never wait longer than maxDelay,
//     and the retries of many workers do not synchronise;
//   - rnd returns a uniform number in [0, 1); nil uses math/rand/v2.
//
// A non-positive minDelay returns 0. A maxDelay below minDelay is treated as
// minDelay. The processor uses Backoff for JetStream NakWithDelay; the
// Supervisor uses it between restarts.
func Backoff(attempt int, minDelay, maxDelay time.Duration, jitter float64, rnd func() float64) time.Duration {
	if minDelay <= 0 {
		return 0
	}
	maxDelay = max(maxDelay, minDelay)
	d := minDelay
	for i := 1; i < attempt && d < maxDelay; i++ {
		if d > maxDelay/2 { // doubling would pass the cap (or overflow)
			d = maxDelay
			break
		}
		d *= 2
	}
	d = min(d, maxDelay)
	jitter = clamp(jitter, 0, 1)
	if jitter == 0 {
		return d
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	f := 1 + jitter*(2*rnd()-1)
	return clamp(time.Duration(float64(d)*f), 0, maxDelay)
}

func clamp[T int | float64 | time.Duration](v, lo, hi T) T {
	return min(max(v, lo), hi)
}

// Sleep waits for d or until ctx is done, whichever is first, and returns
// ctx.Err() in the second case (at once when d <= 0). It is the wait
// between the tries of a retry loop.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
