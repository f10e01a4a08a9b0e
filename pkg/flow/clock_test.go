package flow_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func fired(tm flow.Timer) bool {
	select {
	case <-tm.C():
		return true
	default:
		return false
	}
}

func TestFakeClock(t *testing.T) {
	c := flow.NewFakeClock(epoch)
	short, long := c.NewTimer(time.Second), c.NewTimer(time.Minute)
	if c.Timers() != 2 {
		t.Fatalf("Timers = %d, want 2", c.Timers())
	}
	c.Advance(999 * time.Millisecond)
	if fired(short) || fired(long) {
		t.Fatal("timer fired early")
	}
	c.Advance(time.Millisecond)
	if got := wait(t, "short timer", short.C()); !got.Equal(epoch.Add(time.Second)) {
		t.Errorf("short fired with %v, want its deadline", got)
	}
	if fired(long) || c.Timers() != 1 {
		t.Fatal("long timer must still be pending")
	}
	if !long.Stop() || long.Stop() {
		t.Error("Stop must report true once for a pending timer, then false")
	}
	c.Advance(time.Hour)
	if fired(long) {
		t.Error("stopped timer fired")
	}
	if got := c.Now(); !got.Equal(epoch.Add(time.Hour + time.Second)) {
		t.Errorf("Now = %v", got)
	}
}

func TestFakeClockReset(t *testing.T) {
	c := flow.NewFakeClock(epoch)
	tm := c.NewTimer(time.Second)
	c.Advance(time.Second) // fires; value not received
	if tm.Reset(time.Second) {
		t.Error("Reset of a fired timer must report false")
	}
	if fired(tm) {
		t.Error("Reset must drop the stale value")
	}
	c.Advance(time.Second)
	if !fired(tm) {
		t.Error("reset timer did not fire")
	}
	if !fired(c.NewTimer(0)) {
		t.Error("NewTimer(0) must fire immediately")
	}
}

func TestFakeClockBlockUntil(t *testing.T) {
	c := flow.NewFakeClock(epoch)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.BlockUntil(1)
	}()
	c.NewTimer(time.Second)
	wait(t, "BlockUntil", done)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.BlockUntilContext(ctx, 5); !errors.Is(err, context.Canceled) {
		t.Errorf("BlockUntilContext = %v, want context.Canceled", err)
	}
}

func TestRealClock(t *testing.T) {
	var c flow.Clock = flow.RealClock{}
	if c.Now().IsZero() {
		t.Error("Now is zero")
	}
	wait(t, "real timer", c.NewTimer(0).C())
}
