package flow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// BreakerState is the state of a Breaker.
type BreakerState int

// Breaker states.
const (
	// BreakerClosed lets every call through and counts failures.
	BreakerClosed BreakerState = iota
	// BreakerHalfOpen lets MaxRequests probe calls through; their success
	// closes the breaker, a failure opens it again.
	BreakerHalfOpen
	// BreakerOpen refuses every call until OpenTimeout has passed.
	BreakerOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	default:
		return fmt.Sprintf("BreakerState(%d)", int(s))
	}
}

func fromGobreaker(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	case gobreaker.StateOpen:
		return BreakerOpen
	default:
		return BreakerClosed
	}
}

// BreakerConfig configures a Breaker. Zero values are documented defaults.
//
// The breaker protects against a provider that is down, not against some
// requests failing: it opens when the share of failed calls over a rolling
// window is high (FailureRatio of at least MinRequests calls within
// Interval), never because a handful of calls in a row failed at low volume.
// A provider whose requests fail one by one for their own reasons (a bad
// input, a job's own transient error) keeps its breaker closed; a few
// requests that fail on every attempt cannot open it either, since they
// never make the volume.
type BreakerConfig struct {
	// Name identifies the breaker in errors and OnStateChange.
	Name string
	// MaxRequests is the number of probe calls allowed while half-open, and
	// the number of consecutive probe successes that close the breaker; a
	// failing probe opens it again. 0 → DefaultBreakerMaxRequests (3).
	MaxRequests uint32
	// Interval is the rolling window over which calls are counted while
	// closed (in ten buckets: counts age out gradually, not all at once).
	// 0 → DefaultBreakerInterval (10s); negative → no window, counts are
	// only cleared by a state change.
	Interval time.Duration
	// OpenTimeout is how long the breaker stays open before letting probes
	// through (half-open). 0 → DefaultBreakerOpenTimeout (5s).
	OpenTimeout time.Duration
	// MinRequests is the volume below which the breaker never opens on the
	// failure ratio: the calls that completed (succeeded or failed) within
	// Interval. 0 → DefaultBreakerMinRequests (20).
	MinRequests uint32
	// FailureRatio opens the breaker when at least this share of the calls
	// completed within Interval failed (and there were at least
	// MinRequests). In (0, 1]; 0 → DefaultBreakerFailureRatio (0.5).
	FailureRatio float64
	// ConsecutiveFailures, when > 0, also opens the breaker after that many
	// calls in a row failed, whatever the volume. 0 → off (the default):
	// with per-request failures, runs of failures happen on a healthy
	// provider.
	ConsecutiveFailures uint32
	// IsFailure decides whether an error counts against the provider. nil →
	// every non-nil error that is not terminal (IsTerminal): a terminal error
	// means the request was bad, which is the caller's fault, not a sign that
	// the provider is unhealthy. Errors that are not failures count as
	// successes. Whatever IsFailure says, context.Canceled is ignored: the
	// caller giving up says nothing about the provider.
	IsFailure func(err error) bool
	// OnStateChange, if set, is called on every transition. It runs while
	// the breaker's lock is held: it must be quick and must not call the
	// Breaker.
	OnStateChange func(name string, from, to BreakerState)
}

// Defaults of BreakerConfig: open when at least half of at least 20 calls
// in the last 10s failed, stay open 5s, then let 3 probes through.
const (
	DefaultBreakerMaxRequests  = 3
	DefaultBreakerInterval     = 10 * time.Second
	DefaultBreakerOpenTimeout  = 5 * time.Second
	DefaultBreakerMinRequests  = 20
	DefaultBreakerFailureRatio = 0.5
)

// breakerBuckets is the number of buckets of the rolling window.
const breakerBuckets = 10

// readyToTrip is the trip rule of cfg (defaults applied).
func readyToTrip(minRequests uint32, ratio float64, consecutive uint32) func(gobreaker.Counts) bool {
	return func(c gobreaker.Counts) bool {
		if consecutive > 0 && c.ConsecutiveFailures >= consecutive {
			return true
		}
		// Completed calls only: Requests also counts calls still in flight.
		done := c.TotalSuccesses + c.TotalFailures
		return done >= minRequests && float64(c.TotalFailures) >= ratio*float64(done)
	}
}

// Breaker is a circuit breaker: when the share of failed calls over a
// rolling window is too high it opens and fails fast (ErrBreakerOpen)
// instead of sending more work to a provider that is down, then probes with
// a few calls after OpenTimeout.
//
// It wraps github.com/sony/gobreaker/v2 rather than reimplementing the state
// machine: gobreaker is small, widely used and well tested, its generation
// counting correctly ignores results of calls that started in an earlier
// state, it keeps the rolling window (BucketPeriod), and its Settings
// document every zero default. What Breaker adds is what Beamline needs on
// top: a context-first API, error classification (terminal errors do not
// trip it, the open error is retryable with a Retry-After hint), the
// ratio-with-volume trip rule, and WaitAllowed so a consumer stops pulling
// work while the provider is down.
//
// gobreaker reads the wall clock itself (like every part of this package,
// see the package doc); tests drive it with testing/synctest.
type Breaker struct {
	name        string
	cb          *gobreaker.TwoStepCircuitBreaker[struct{}]
	openTimeout time.Duration

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every state change
	openedAt time.Time     // when the breaker last opened
}

// NewBreaker returns a closed Breaker.
func NewBreaker(cfg BreakerConfig) *Breaker {
	b := &Breaker{
		name:        cfg.Name,
		openTimeout: cfg.OpenTimeout,
		changed:     make(chan struct{}),
	}
	if b.openTimeout <= 0 {
		b.openTimeout = DefaultBreakerOpenTimeout
	}
	maxRequests := cfg.MaxRequests
	if maxRequests == 0 {
		maxRequests = DefaultBreakerMaxRequests
	}
	interval, bucket := cfg.Interval, time.Duration(0)
	switch {
	case interval == 0:
		interval = DefaultBreakerInterval
		fallthrough
	case interval > 0:
		bucket = max(interval/breakerBuckets, time.Millisecond)
	default:
		interval = 0
	}
	minRequests := cfg.MinRequests
	if minRequests == 0 {
		minRequests = DefaultBreakerMinRequests
	}
	ratio := cfg.FailureRatio
	if ratio <= 0 {
		ratio = DefaultBreakerFailureRatio
	}
	isFailure := cfg.IsFailure
	if isFailure == nil {
		isFailure = func(err error) bool { return err != nil && !IsTerminal(err) }
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         cfg.Name,
		MaxRequests:  maxRequests,
		Interval:     interval,
		BucketPeriod: bucket,
		Timeout:      b.openTimeout,
		ReadyToTrip:  readyToTrip(minRequests, ratio, cfg.ConsecutiveFailures),
		IsSuccessful: func(err error) bool {
			return !isFailure(err)
		},
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, ErrNotCalled)
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			b.stateChanged(to)
			if cfg.OnStateChange != nil {
				cfg.OnStateChange(name, fromGobreaker(from), fromGobreaker(to))
			}
		},
	})
	return b
}

// stateChanged runs under gobreaker's lock; it only takes b.mu, which is
// never held while calling into gobreaker.
func (b *Breaker) stateChanged(to gobreaker.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if to == gobreaker.StateOpen {
		b.openedAt = time.Now()
	}
	b.signalLocked()
}

// signalLocked wakes every waiter (WaitAllowed, WaitAdmitted). b.mu held.
func (b *Breaker) signalLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Name returns the configured name.
func (b *Breaker) Name() string { return b.name }

// State returns the current state. An open breaker whose OpenTimeout has
// passed reports (and becomes) half-open.
func (b *Breaker) State() BreakerState { return fromGobreaker(b.cb.State()) }

// ErrNotCalled, passed to the done func of Allow, releases an admission
// whose call was never made (the caller gave up before calling: a failed
// write, a shutdown). It records no outcome, success or failure, and frees
// the probe slot of a half-open breaker for another caller, so a breaker
// never stays half-open waiting for a probe that will not come.
var ErrNotCalled = errors.New("flow: call not made")

// Do calls fn if the breaker allows it and records the outcome. When the
// breaker is open — or half-open with all MaxRequests probes in flight — fn
// is not called and Do returns a retryable error that wraps ErrBreakerOpen
// and, when open, carries the time left until the breaker half-opens as its
// RetryAfterHint. If ctx is already done, Do returns ctx.Err() without
// calling fn.
//
// A panic in fn is counted as a failure and then propagates; wrap fn in a
// Boundary to contain it.
func (b *Breaker) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done, err := b.Allow()
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished {
			r := recover()
			done(fmt.Errorf("flow: breaker %s: call panicked: %v", b.name, r))
			panic(r)
		}
	}()
	err = fn(ctx)
	finished = true
	done(err)
	return err
}

// Allow is the first step of a call in two steps: it asks for admission
// without making the call, so a caller can do its own bookkeeping between
// being admitted and calling (the processor counts a job's attempt only
// once the provider is sure to be called). When the breaker is open — or
// half-open with its MaxRequests probes admitted — it returns a retryable
// error wrapping ErrBreakerOpen (with the time left until half-open as its
// RetryAfterHint when open) and a nil done.
//
// When admitted, the caller must call done exactly once (later calls are
// ignored) with the call's outcome, classified as Do classifies it: nil or
// a non-failure (IsFailure; terminal errors by default) is a success,
// context.Canceled is ignored, and ErrNotCalled releases the admission
// without any outcome when the call was not made after all. A call that
// panics must be reported as a failure (e.g. the *PanicError of a Boundary)
// before the panic goes on. A done that never comes leaves a half-open
// breaker's probe slot taken until the breaker changes state otherwise.
func (b *Breaker) Allow() (done func(err error), err error) {
	cbDone, err := b.cb.Allow()
	switch err { // gobreaker's own sentinels, unwrapped
	case nil:
	case gobreaker.ErrOpenState:
		return nil, Retryable(fmt.Errorf("%w: %s", ErrBreakerOpen, b.name), b.untilHalfOpen())
	case gobreaker.ErrTooManyRequests:
		return nil, Retryable(fmt.Errorf("%w: %s: half-open, probes in flight", ErrBreakerOpen, b.name), 0)
	default:
		return nil, err
	}
	var once sync.Once
	return func(err error) {
		once.Do(func() {
			cbDone(err)
			if errors.Is(err, context.Canceled) || errors.Is(err, ErrNotCalled) {
				// A released admission may free a half-open probe slot:
				// wake WaitAdmitted (a recorded outcome that frees one
				// changes the state, which wakes it too).
				b.mu.Lock()
				b.signalLocked()
				b.mu.Unlock()
			}
		})
	}, nil
}

// WaitAdmitted blocks until Allow admits a call and returns its done, or
// returns ctx.Err() when ctx is done first. It does not poll: it sleeps
// until the open timeout expires, the state changes or an admission is
// released.
func (b *Breaker) WaitAdmitted(ctx context.Context) (done func(err error), err error) {
	for {
		// Take the change channel before asking, so that a release or a
		// transition after the refusal closes the channel we wait on (as
		// does the transition State makes when the open timeout passed).
		b.mu.Lock()
		changed := b.changed
		b.mu.Unlock()

		done, err := b.Allow()
		if err == nil {
			return done, nil
		}
		if !errors.Is(err, ErrBreakerOpen) {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Open: wake when it half-opens (a little late is harmless: the
		// loop waits again). Half-open with its probes taken: only a state
		// change or a release frees a slot; the timer is a safety net.
		wait := time.Second
		if b.cb.State() == gobreaker.StateOpen {
			wait = max(b.untilHalfOpen(), time.Millisecond)
		}
		waitChange(ctx, changed, wait)
	}
}

// waitChange waits until changed is closed, wait has passed or ctx is done.
func waitChange(ctx context.Context, changed <-chan struct{}, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
	}
}

// untilHalfOpen returns how long the breaker stays open, 0 if not known.
func (b *Breaker) untilHalfOpen() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openedAt.IsZero() {
		return 0
	}
	return max(time.Until(b.openedAt.Add(b.openTimeout)), 0)
}

// WaitAllowed blocks while the breaker is open and returns nil as soon as it
// is closed or half-open, or ctx.Err() when ctx is done first. The processor
// calls it before pulling the next message, so that no work is taken from
// the queue while the provider is down.
//
// It does not poll: it sleeps until the open timeout expires or the state
// changes. Returning in the half-open state does not guarantee that the next
// Do is let through, since only MaxRequests probes are.
func (b *Breaker) WaitAllowed(ctx context.Context) error {
	for {
		// Take the change channel before reading the state, so that a
		// transition after the read closes the channel we wait on.
		b.mu.Lock()
		changed := b.changed
		halfOpenAt := b.openedAt.Add(b.openTimeout)
		b.mu.Unlock()

		if b.cb.State() != gobreaker.StateOpen {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// gobreaker half-opens strictly after its deadline; waking exactly on
		// it (or on a clock tick late) is harmless: the loop waits a little
		// more.
		wait := max(time.Until(halfOpenAt), time.Millisecond)
		waitChange(ctx, changed, wait)
	}
}
