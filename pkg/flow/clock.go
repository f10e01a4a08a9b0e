package flow

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Clock is the source of time for components whose timing logic needs tests.
// RealClock is the production implementation; NewFakeClock returns one that
// only moves when told to.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the subset of *time.Timer that flow uses. Stop and Reset follow the
// Go 1.23+ semantics of time.Timer: after they return, no stale value is
// received from C.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// RealClock is a Clock backed by the time package.
type RealClock struct{}

var _ Clock = RealClock{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer returns a Timer backed by time.NewTimer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

// orRealClock returns c, or RealClock when c is nil.
func orRealClock(c Clock) Clock {
	if c == nil {
		return RealClock{}
	}
	return c
}

// FakeClock is a Clock for tests: time stands still until Advance is called.
// It is safe for concurrent use.
type FakeClock struct {
	mu     sync.Mutex
	cond   *sync.Cond // signalled when timers are added
	now    time.Time
	timers []*fakeTimer // pending timers, unordered
}

var _ Clock = (*FakeClock)(nil)

// NewFakeClock returns a FakeClock whose Now is start.
func NewFakeClock(start time.Time) *FakeClock {
	c := &FakeClock{now: start}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// Now returns the fake current time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a Timer that fires when the clock is advanced by d or more.
// A timer with d <= 0 fires immediately.
func (c *FakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{clock: c, ch: make(chan time.Time, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.schedule(t, d)
	return t
}

// Advance moves the clock forward by d and fires, in deadline order, every
// timer whose deadline is reached.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	slices.SortFunc(c.timers, func(a, b *fakeTimer) int { return a.when.Compare(b.when) })
	i := 0
	for ; i < len(c.timers) && !c.timers[i].when.After(c.now); i++ {
		c.timers[i].fire()
	}
	c.timers = slices.Delete(c.timers, 0, i)
}

// Timers returns the number of pending (started, not fired, not stopped)
// timers.
func (c *FakeClock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// BlockUntil blocks until at least n timers are pending. Tests call it before
// Advance to make sure the code under test has started waiting.
func (c *FakeClock) BlockUntil(n int) {
	_ = c.BlockUntilContext(context.Background(), n)
}

// BlockUntilContext is BlockUntil that gives up with ctx.Err() when ctx is
// done.
func (c *FakeClock) BlockUntilContext(ctx context.Context, n int) error {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.cond.Broadcast()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.cond.Wait()
	}
	return nil
}

// schedule arms t to fire d from now; c.mu must be held.
func (c *FakeClock) schedule(t *fakeTimer, d time.Duration) {
	t.when = c.now.Add(d)
	if d <= 0 {
		t.fire()
		return
	}
	c.timers = append(c.timers, t)
	c.cond.Broadcast()
}

// unschedule disarms t and drops any undelivered value; c.mu must be held.
func (c *FakeClock) unschedule(t *fakeTimer) bool {
	select {
	case <-t.ch:
	default:
	}
	i := slices.Index(c.timers, t)
	if i < 0 {
		return false
	}
	c.timers = slices.Delete(c.timers, i, i+1)
	return true
}

type fakeTimer struct {
	clock *FakeClock
	ch    chan time.Time
	when  time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) fire() {
	select {
	case t.ch <- t.when:
	default:
	}
}

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	return t.clock.unschedule(t)
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	active := t.clock.unschedule(t)
	t.clock.schedule(t, d)
	return active
}
