// Package testutil holds the small helpers every package's tests share.
// Tests wait by polling with a deadline, never by sleeping a fixed time.
package testutil

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// PollInterval is how often WaitFor asks its condition again.
const PollInterval = 10 * time.Millisecond

// WaitFor polls cond until it holds, and fails t (t.Fatal) when it still
// does not after timeout. msg says what was awaited: each element is
// printed as fmt.Sprint does, except a func() string, which is called only
// on failure (to describe the state at that moment).
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, msg ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(failure(timeout, msg))
		}
		time.Sleep(PollInterval)
	}
}

func failure(timeout time.Duration, msg []any) string {
	s := fmt.Sprintf("condition not met within %v", timeout)
	if len(msg) == 0 {
		return s
	}
	parts := make([]string, len(msg))
	for i, m := range msg {
		if f, ok := m.(func() string); ok {
			parts[i] = f()
		} else {
			parts[i] = fmt.Sprint(m)
		}
	}
	return s + ": " + strings.Join(parts, " ")
}
