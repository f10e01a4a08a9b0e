package flow_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// harness runs a supervisor. Tests using it run in a testing/synctest
// bubble: time moves on (backoff, Period) only while every goroutine of the
// test is blocked, so a backoff takes no real time.
type harness struct {
	t      *testing.T
	mu     sync.Mutex
	starts map[string]int
	events []flow.SupervisorEvent
	start  chan string // receives the name of every child Run call
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, starts: map[string]int{}, start: make(chan string, 1000)}
}

// config returns a config wired to the harness; Period is long enough that
// time passing in backoff does not age restarts out of it.
func (h *harness) config(strategy flow.Strategy) flow.SupervisorConfig {
	return flow.SupervisorConfig{
		Name: "sup", Strategy: strategy, Period: time.Hour,
		OnEvent: func(ev flow.SupervisorEvent) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.events = append(h.events, ev)
		},
	}
}

// child returns a spec whose Run calls behave with its 1-based start number.
func (h *harness) child(name string, restart flow.Restart, behave func(ctx context.Context, n int) error) flow.ChildSpec {
	return flow.ChildSpec{Name: name, Restart: restart, Run: func(ctx context.Context) error {
		h.mu.Lock()
		h.starts[name]++
		n := h.starts[name]
		h.mu.Unlock()
		h.start <- name
		return behave(ctx, n)
	}}
}

func (h *harness) startsOf(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.starts[name]
}

// eventsOf returns "kind" strings for one child, or all events if child is "".
func (h *harness) eventsOf(child string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, ev := range h.events {
		if child == "" || ev.Child == child {
			out = append(out, ev.Child+":"+ev.Kind.String())
		}
	}
	return out
}

// snapshot returns a copy of the events so far.
func (h *harness) snapshot() []flow.SupervisorEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

// run starts s.Run and returns a cancel func and a wait func for its result.
func (h *harness) run(s *flow.Supervisor) (cancel func(), result func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	result = func() error {
		once.Do(func() {
			err = wait(h.t, "Supervisor.Run", done)
		})
		return err
	}
	h.t.Cleanup(func() { cancel(); _ = result() })
	return cancel, result
}

// waitStarts waits until n child Run calls happened in total.
func (h *harness) waitStarts(n int) {
	for range n {
		wait(h.t, "child start", h.start)
	}
}

func blockUntilDone(ctx context.Context, _ int) error {
	<-ctx.Done()
	return ctx.Err()
}

// failFirst fails the first run with err (or panics if err is nil) and then
// blocks until the supervisor stops it.
func failFirst(err error) func(context.Context, int) error {
	return func(ctx context.Context, n int) error {
		if n == 1 {
			if err == nil {
				panic("crash")
			}
			return err
		}
		return blockUntilDone(ctx, n)
	}
}

func TestNewSupervisorValidation(t *testing.T) {
	run := func(context.Context) error { return nil }
	ok := flow.ChildSpec{Name: "a", Run: run}
	tests := []struct {
		name     string
		cfg      flow.SupervisorConfig
		children []flow.ChildSpec
		wantErr  error
	}{
		{"defaults", flow.SupervisorConfig{}, []flow.ChildSpec{ok}, nil},
		{"no children", flow.SupervisorConfig{}, nil, flow.ErrInvalidConfig},
		{"bad strategy", flow.SupervisorConfig{Strategy: 7}, []flow.ChildSpec{ok}, flow.ErrInvalidConfig},
		{"negative restarts", flow.SupervisorConfig{MaxRestarts: -1}, []flow.ChildSpec{ok}, flow.ErrInvalidConfig},
		{"negative period", flow.SupervisorConfig{Period: -time.Second}, []flow.ChildSpec{ok}, flow.ErrInvalidConfig},
		{"negative backoff", flow.SupervisorConfig{BackoffMin: -1}, []flow.ChildSpec{ok}, flow.ErrInvalidConfig},
		{"backoff max below min", flow.SupervisorConfig{BackoffMin: time.Second, BackoffMax: time.Millisecond}, []flow.ChildSpec{ok}, flow.ErrInvalidConfig},
		{"unnamed child", flow.SupervisorConfig{}, []flow.ChildSpec{{Run: run}}, flow.ErrInvalidConfig},
		{"duplicate child", flow.SupervisorConfig{}, []flow.ChildSpec{ok, ok}, flow.ErrInvalidConfig},
		{"child without Run", flow.SupervisorConfig{}, []flow.ChildSpec{{Name: "a"}}, flow.ErrInvalidConfig},
		{"bad restart type", flow.SupervisorConfig{}, []flow.ChildSpec{{Name: "a", Run: run, Restart: 9}}, flow.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := flow.NewSupervisor(tt.cfg, tt.children...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if (s == nil) != (tt.wantErr != nil) {
				t.Fatalf("supervisor = %v with err %v", s, err)
			}
		})
	}
}

func TestSupervisorRestartTypes(t *testing.T) {
	tests := []struct {
		name        string
		restart     flow.Restart
		first       error // nil with panics=false: clean exit
		panics      bool
		wantRestart bool
	}{
		{"permanent after clean exit", flow.Permanent, nil, false, true},
		{"permanent after error", flow.Permanent, errBase, false, true},
		{"transient after clean exit", flow.Transient, nil, false, false},
		{"transient after error", flow.Transient, errBase, false, true},
		{"transient after panic", flow.Transient, nil, true, true},
		{"temporary after error", flow.Temporary, errBase, false, false},
		{"temporary after panic", flow.Temporary, nil, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t)
				behave := func(ctx context.Context, n int) error {
					switch {
					case n > 1:
						return blockUntilDone(ctx, n)
					case tt.panics:
						panic("crash")
					default:
						return tt.first
					}
				}
				s, err := flow.NewSupervisor(h.config(flow.OneForOne), h.child("c", tt.restart, behave))
				if err != nil {
					t.Fatal(err)
				}
				cancel, result := h.run(s)
				if tt.wantRestart {
					h.waitStarts(2)
					cancel()
				}
				// Without a restart Run returns by itself: no child is left.
				if err := result(); err != nil {
					t.Fatalf("Run = %v", err)
				}
				if want := map[bool]int{true: 2, false: 1}[tt.wantRestart]; h.startsOf("c") != want {
					t.Errorf("starts = %d, want %d", h.startsOf("c"), want)
				}
			})
		})
	}
}

func TestSupervisorContainsPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		s, _ := flow.NewSupervisor(h.config(flow.OneForOne), h.child("c", flow.Permanent, failFirst(nil)))
		cancel, result := h.run(s)
		h.waitStarts(2)
		cancel()
		if err := result(); err != nil {
			t.Fatal(err)
		}
		want := []string{"c:child_started", "c:child_panicked", "c:child_restarting", "c:child_started", "c:child_exited"}
		if got := h.eventsOf("c"); !slices.Equal(got, want) {
			t.Errorf("events = %v, want %v", got, want)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		var pe *flow.PanicError
		if !errors.As(h.events[1].Err, &pe) || pe.Value != "crash" {
			t.Errorf("panic event err = %v", h.events[1].Err)
		}
		if r := h.events[2]; r.Restarts != 1 || r.Backoff <= 0 || r.Backoff > time.Second || r.Supervisor != "sup" {
			t.Errorf("restarting event = %+v", r)
		}
	})
}

func TestSupervisorStrategies(t *testing.T) {
	tests := []struct {
		strategy   flow.Strategy
		wantStarts map[string]int
		wantExits  []string // order in which children exit after b fails
	}{
		{flow.OneForOne, map[string]int{"a": 1, "b": 2, "c": 1}, []string{"b"}},
		{flow.OneForAll, map[string]int{"a": 2, "b": 2, "c": 2}, []string{"b", "c", "a"}},
		{flow.RestForOne, map[string]int{"a": 1, "b": 2, "c": 2}, []string{"b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.strategy.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t)
				s, _ := flow.NewSupervisor(h.config(tt.strategy),
					h.child("a", flow.Permanent, blockUntilDone),
					h.child("b", flow.Permanent, failFirst(errBase)),
					h.child("c", flow.Permanent, blockUntilDone),
					h.child("t", flow.Temporary, blockUntilDone), // stopped, never restarted
				)
				cancel, result := h.run(s)
				total := 1 // the temporary child
				for _, n := range tt.wantStarts {
					total += n
				}
				h.waitStarts(total)
				var exits []string
				for _, e := range h.eventsOf("") {
					if name, ok := strings.CutSuffix(e, ":child_exited"); ok && name != "t" {
						exits = append(exits, name)
					}
				}
				cancel()
				if err := result(); err != nil {
					t.Fatal(err)
				}
				for name, want := range tt.wantStarts {
					if got := h.startsOf(name); got != want {
						t.Errorf("%s started %d times, want %d", name, got, want)
					}
				}
				if h.startsOf("t") != 1 {
					t.Errorf("temporary child started %d times", h.startsOf("t"))
				}
				if !slices.Equal(exits, tt.wantExits) {
					t.Errorf("exit order = %v, want %v", exits, tt.wantExits)
				}
			})
		})
	}
}

func TestSupervisorStopsChildrenInReverseOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		s, _ := flow.NewSupervisor(h.config(flow.OneForOne),
			h.child("a", flow.Permanent, blockUntilDone),
			h.child("b", flow.Permanent, blockUntilDone),
			h.child("c", flow.Permanent, blockUntilDone),
		)
		cancel, result := h.run(s)
		h.waitStarts(3)
		cancel()
		if err := result(); err != nil {
			t.Fatalf("Run = %v, want nil on cancellation", err)
		}
		want := []string{"a:child_started", "b:child_started", "c:child_started", "c:child_exited", "b:child_exited", "a:child_exited"}
		if got := h.eventsOf(""); !slices.Equal(got, want) {
			t.Errorf("events = %v, want %v", got, want)
		}
	})
}

func TestSupervisorRestartIntensity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		cfg := h.config(flow.OneForOne)
		cfg.MaxRestarts = 3
		s, _ := flow.NewSupervisor(cfg,
			h.child("flaky", flow.Permanent, func(context.Context, int) error { return errBase }),
			h.child("steady", flow.Permanent, blockUntilDone),
		)
		_, result := h.run(s)
		err := result()
		if !errors.Is(err, flow.ErrRestartIntensity) || !errors.Is(err, errBase) {
			t.Fatalf("Run = %v, want ErrRestartIntensity wrapping the child error", err)
		}
		if got := h.startsOf("flaky"); got != 4 {
			t.Errorf("flaky started %d times, want 1 + MaxRestarts", got)
		}
		events := h.eventsOf("")
		if !slices.Contains(events, "flaky:supervisor_gave_up") || events[len(events)-1] != "steady:child_exited" {
			t.Errorf("events = %v: want give-up, then siblings stopped", events)
		}
	})
}

// Restarts spread further apart than Period never add up to giving up.
func TestSupervisorIntensityWindowSlides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		cfg := h.config(flow.OneForOne)
		cfg.MaxRestarts, cfg.Period = 1, time.Second
		s, _ := flow.NewSupervisor(cfg, h.child("c", flow.Transient, func(ctx context.Context, n int) error {
			if n <= 6 {
				time.Sleep(2 * time.Second) // each run outlasts Period
				return errBase
			}
			return nil
		}))
		_, result := h.run(s)
		if err := result(); err != nil {
			t.Fatalf("Run = %v, want nil after the child finally succeeded", err)
		}
		if got := h.startsOf("c"); got != 7 {
			t.Errorf("starts = %d, want 7", got)
		}
	})
}

func TestSupervisorWaitsForBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		s, _ := flow.NewSupervisor(h.config(flow.OneForOne), h.child("c", flow.Permanent, failFirst(errBase)))
		cancel, result := h.run(s)
		h.waitStarts(1)
		failed := time.Now()
		synctest.Wait() // the restart is waiting for its backoff; time stands still
		if h.startsOf("c") != 1 {
			t.Fatal("restarted before the backoff elapsed")
		}
		h.waitStarts(1) // time moves on once every goroutine waits
		var backoff time.Duration
		for _, ev := range h.snapshot() {
			if ev.Kind == flow.ChildRestarting {
				backoff = ev.Backoff
			}
		}
		if backoff <= 0 || time.Since(failed) < backoff {
			t.Fatalf("restarted %v after the failure, backoff %v", time.Since(failed), backoff)
		}

		cancel()
		if err := result(); err != nil {
			t.Fatal(err)
		}
		if h.startsOf("c") != 2 {
			t.Fatalf("starts = %d, want 2", h.startsOf("c"))
		}
	})
}

func TestSupervisorCancelDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		s, _ := flow.NewSupervisor(h.config(flow.OneForOne), h.child("c", flow.Permanent, failFirst(errBase)))
		cancel, result := h.run(s)
		h.waitStarts(1)
		synctest.Wait() // the restart is waiting for its backoff
		cancel()
		if err := result(); err != nil {
			t.Fatal(err)
		}
		if h.startsOf("c") != 1 {
			t.Fatal("a child cancelled during its backoff must not run")
		}
	})
}

func TestSupervisorNestedEscalation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		innerCfg := h.config(flow.OneForOne)
		innerCfg.Name, innerCfg.MaxRestarts = "inner", 1
		inner, _ := flow.NewSupervisor(innerCfg, h.child("leaf", flow.Permanent, func(context.Context, int) error { return errBase }))
		outerCfg := h.config(flow.OneForOne)
		outerCfg.Name, outerCfg.MaxRestarts = "outer", 1
		outer, _ := flow.NewSupervisor(outerCfg, inner.Spec(flow.Permanent))

		_, result := h.run(outer)
		err := result()
		if !errors.Is(err, flow.ErrRestartIntensity) || !errors.Is(err, errBase) {
			t.Fatalf("Run = %v", err)
		}
		if !strings.Contains(err.Error(), `"outer"`) || !strings.Contains(err.Error(), `"inner"`) {
			t.Errorf("error %q should name both supervisors", err)
		}
		// outer runs inner twice; each inner run starts leaf twice.
		if got := h.startsOf("leaf"); got != 4 {
			t.Errorf("leaf started %d times, want 4", got)
		}
	})
}

func TestSupervisorRunTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		s, _ := flow.NewSupervisor(h.config(flow.OneForOne), h.child("c", flow.Permanent, blockUntilDone))
		cancel, result := h.run(s)
		h.waitStarts(1)
		if err := s.Run(context.Background()); !errors.Is(err, flow.ErrAlreadyRunning) {
			t.Errorf("concurrent Run = %v, want ErrAlreadyRunning", err)
		}
		cancel()
		if err := result(); err != nil {
			t.Fatal(err)
		}
		// Run again after it returned, as a parent supervisor would.
		cancel, result = h.run(s)
		h.waitStarts(1)
		cancel()
		if err := result(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEnumStrings(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{flow.OneForOne.String(), "one_for_one"},
		{flow.RestForOne.String(), "rest_for_one"},
		{flow.Strategy(9).String(), "Strategy(9)"},
		{flow.Transient.String(), "transient"},
		{flow.Restart(9).String(), "Restart(9)"},
		{flow.SupervisorGaveUp.String(), "supervisor_gave_up"},
		{flow.EventKind(0).String(), "EventKind(0)"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
