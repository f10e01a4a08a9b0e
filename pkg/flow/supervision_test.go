package flow_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// A child that ignores its context is waited for at most its Shutdown, then
// reported (ChildAbandoned) and left behind: stopping goes on with the
// other children and Run returns.
func TestSupervisorAbandonsChildPastShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		release := make(chan struct{})
		stuck := h.child("stuck", flow.Permanent, func(context.Context, int) error {
			<-release // ignores its context
			return nil
		})
		stuck.Shutdown = 3 * time.Second
		s, err := flow.NewSupervisor(h.config(flow.OneForOne), h.child("a", flow.Permanent, blockUntilDone), stuck)
		if err != nil {
			t.Fatal(err)
		}
		cancel, result := h.run(s)
		h.waitStarts(2)
		stopping := time.Now()
		cancel()
		if err := result(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if waited := time.Since(stopping); waited != stuck.Shutdown {
			t.Errorf("Run returned %v after the cancel, want the child's Shutdown %v", waited, stuck.Shutdown)
		}
		want := []string{"a:child_started", "stuck:child_started", "stuck:child_abandoned", "a:child_exited"}
		if got := h.eventsOf(""); !slices.Equal(got, want) {
			t.Errorf("events = %v, want %v", got, want)
		}
		for _, ev := range h.snapshot() {
			if ev.Kind == flow.ChildAbandoned && !errors.Is(ev.Err, flow.ErrShutdownTimeout) {
				t.Errorf("abandoned event err = %v, want ErrShutdownTimeout", ev.Err)
			}
		}
		close(release) // the abandoned goroutine ends on its own; its exit is discarded
	})
}

// Without a Shutdown of its own a child gets the default (5s); a nested
// supervisor (Spec) is waited for as long as it takes, since it bounds its
// own children.
func TestSupervisorDefaultShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		release := make(chan struct{})
		innerCfg := h.config(flow.OneForOne)
		innerCfg.Name = "inner"
		inner, _ := flow.NewSupervisor(innerCfg, h.child("slow", flow.Permanent, func(ctx context.Context, _ int) error {
			<-ctx.Done()
			time.Sleep(time.Minute) // stops slowly, beyond the default Shutdown
			return nil
		}))
		outer, _ := flow.NewSupervisor(h.config(flow.OneForOne), inner.Spec(flow.Permanent),
			h.child("stuck", flow.Permanent, func(context.Context, int) error { <-release; return nil }))
		cancel, result := h.run(outer)
		h.waitStarts(2)
		stopping := time.Now()
		cancel()
		if err := result(); err != nil {
			t.Fatal(err)
		}
		// stuck: abandoned after 5s; inner: its child abandoned after 5s
		// more, and inner itself waited for.
		if waited := time.Since(stopping); waited != 10*time.Second {
			t.Errorf("Run returned %v after the cancel, want 10s", waited)
		}
		want := []string{"stuck:child_abandoned", "slow:child_abandoned", "inner:child_exited"}
		var got []string
		for _, e := range h.eventsOf("") {
			if slices.Contains(want, e) {
				got = append(got, e)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("events = %v, want %v in that order", h.eventsOf(""), want)
		}
		close(release)
		time.Sleep(time.Minute) // the abandoned children end on their own
	})
}
