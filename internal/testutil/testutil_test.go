package testutil

import (
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWaitForHolds(t *testing.T) {
	var n atomic.Int32
	WaitFor(t, 5*time.Second, func() bool { return n.Add(1) >= 3 })
	if n.Load() != 3 {
		t.Errorf("cond asked %d times, want 3", n.Load())
	}
}

func TestFailureMessage(t *testing.T) {
	for _, tc := range []struct {
		msg  []any
		want string
	}{
		{nil, "condition not met within 1s"},
		{[]any{"job", 7, "never ran"}, "condition not met within 1s: job 7 never ran"},
		{[]any{func() string { return "status queued" }}, "condition not met within 1s: status queued"},
	} {
		if got := failure(time.Second, tc.msg); got != tc.want {
			t.Errorf("failure(%v) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}

// fakeTB records a failure instead of stopping the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.failed = args[0].(string)
	panic(f)
}

func TestWaitForTimesOut(t *testing.T) {
	f := &fakeTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				panic(r)
			}
		}()
		WaitFor(f, 30*time.Millisecond, func() bool { return false }, "never")
	}()
	if f.failed != "condition not met within 30ms: never" {
		t.Errorf("failed with %q", f.failed)
	}
}
