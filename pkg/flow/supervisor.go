package flow

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// Strategy decides which children a Supervisor restarts when one fails.
type Strategy int

// Restart strategies, as in OTP.
const (
	// OneForOne restarts only the child that exited.
	OneForOne Strategy = iota
	// OneForAll stops all other children and restarts them all: for children
	// that cannot work without each other.
	OneForAll
	// RestForOne stops and restarts the exited child and every child started
	// after it: for pipelines where later children depend on earlier ones.
	//
	// With OneForAll and RestForOne, siblings are stopped in reverse start
	// order and restarted in start order; Temporary siblings are stopped and
	// not restarted, and siblings that had already terminated for good stay
	// terminated.
	RestForOne
)

func (s Strategy) String() string {
	switch s {
	case OneForOne:
		return "one_for_one"
	case OneForAll:
		return "one_for_all"
	case RestForOne:
		return "rest_for_one"
	default:
		return fmt.Sprintf("Strategy(%d)", int(s))
	}
}

// Restart decides whether a child that exited is restarted.
type Restart int

// Restart types, as in OTP.
const (
	// Permanent children are always restarted, even after returning nil.
	Permanent Restart = iota
	// Transient children are restarted only after an error or a panic.
	Transient
	// Temporary children are never restarted — not even when a sibling's
	// failure makes a OneForAll or RestForOne supervisor stop them.
	Temporary
)

func (r Restart) String() string {
	switch r {
	case Permanent:
		return "permanent"
	case Transient:
		return "transient"
	case Temporary:
		return "temporary"
	default:
		return fmt.Sprintf("Restart(%d)", int(r))
	}
}

// ChildSpec describes a child of a Supervisor.
type ChildSpec struct {
	// Name identifies the child in events and errors; unique per supervisor.
	Name string
	// Run does the child's work until ctx is done. It must return when ctx
	// is done: the supervisor waits for it. ctx carries the values of the
	// supervisor's context, but is cancelled by the supervisor itself, one
	// child at a time, so that children stop in reverse start order.
	Run func(ctx context.Context) error
	// Restart is the child's restart type.
	Restart Restart
	// Shutdown bounds how long the supervisor waits for Run to return after
	// cancelling its context (OTP's shutdown). A child still running then is
	// reported (a ChildAbandoned event) and left behind: Go cannot kill a
	// goroutine, so the supervisor stops waiting for it instead. 0 → 5s;
	// negative → wait as long as it takes (OTP's infinity, the default of
	// Spec, since a nested supervisor bounds its own children).
	Shutdown time.Duration
}

// EventKind is the kind of a SupervisorEvent.
type EventKind int

// Supervisor event kinds.
const (
	// ChildStarted: the child's goroutine was launched. After a restart its
	// Run is called once the Backoff of the preceding ChildRestarting event
	// has passed.
	ChildStarted EventKind = iota + 1
	// ChildExited: the child's Run returned; Err is what it returned.
	ChildExited
	// ChildRestarting: the child will be restarted; Err is the failure that
	// caused it (for siblings of a OneForAll/RestForOne restart, the failure
	// of the child that triggered it), Restarts counts this restart.
	ChildRestarting
	// ChildPanicked: the child's Run panicked; Err is a *PanicError.
	ChildPanicked
	// SupervisorGaveUp: restart intensity was exceeded; the supervisor stops
	// all children and Run returns an error wrapping ErrRestartIntensity.
	SupervisorGaveUp
	// ChildAbandoned: the child was cancelled and had not returned within
	// its Shutdown; the supervisor no longer waits for it (its goroutine is
	// left to finish on its own, its exit discarded). Err wraps
	// ErrShutdownTimeout.
	ChildAbandoned
)

func (k EventKind) String() string {
	switch k {
	case ChildStarted:
		return "child_started"
	case ChildExited:
		return "child_exited"
	case ChildRestarting:
		return "child_restarting"
	case ChildPanicked:
		return "child_panicked"
	case SupervisorGaveUp:
		return "supervisor_gave_up"
	case ChildAbandoned:
		return "child_abandoned"
	default:
		return fmt.Sprintf("EventKind(%d)", int(k))
	}
}

// SupervisorEvent reports what a Supervisor did, for logs and metrics.
type SupervisorEvent struct {
	Supervisor string
	Child      string
	Kind       EventKind
	Err        error
	// Restarts is how many times Child has been restarted by this Run (for
	// SupervisorGaveUp: the restarts counted within Period).
	Restarts int
	// Backoff is the delay before the restarted child runs (ChildRestarting).
	Backoff time.Duration
}

// SupervisorConfig configures a Supervisor. Zero values are documented
// defaults.
type SupervisorConfig struct {
	// Name identifies the supervisor in events and errors, and is its child
	// name when nested with Spec. "" → "supervisor".
	Name     string
	Strategy Strategy
	// MaxRestarts and Period set the restart intensity: when more than
	// MaxRestarts restarts happen within Period, the supervisor gives up.
	// 0 → 5 restarts, 0 → 5s.
	MaxRestarts int
	Period      time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential delay before
	// a restarted child runs (see Backoff; the attempt is the number of the
	// child's restarts within Period). 0 → 10ms, 0 → 1s.
	BackoffMin, BackoffMax time.Duration
	// OnEvent, if set, receives every event. It is called from the
	// supervisor's own goroutine, one event at a time; it must not block.
	OnEvent func(SupervisorEvent)
}

const (
	defaultMaxRestarts = 5
	defaultPeriod      = 5 * time.Second
	defaultBackoffMin  = 10 * time.Millisecond
	defaultBackoffMax  = time.Second
	defaultShutdown    = 5 * time.Second
	backoffJitter      = 0.2
)

// Supervisor runs children and keeps them running: it contains their panics,
// restarts them according to its Strategy and their Restart type, and
// escalates to its own caller (or parent supervisor) when they fail too
// often. Create it with NewSupervisor and start it with Run.
type Supervisor struct {
	cfg      SupervisorConfig
	children []ChildSpec
	running  atomic.Bool
}

// NewSupervisor validates cfg and children and returns a Supervisor. Errors
// wrap ErrInvalidConfig.
func NewSupervisor(cfg SupervisorConfig, children ...ChildSpec) (*Supervisor, error) {
	if cfg.Name == "" {
		cfg.Name = "supervisor"
	}
	bad := func(format string, args ...any) (*Supervisor, error) {
		return nil, fmt.Errorf("%w: supervisor %q: %s", ErrInvalidConfig, cfg.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case cfg.Strategy < OneForOne || cfg.Strategy > RestForOne:
		return bad("unknown strategy %v", cfg.Strategy)
	case cfg.MaxRestarts < 0:
		return bad("MaxRestarts must be >= 0, got %d", cfg.MaxRestarts)
	case cfg.Period < 0:
		return bad("Period must be >= 0, got %v", cfg.Period)
	case cfg.BackoffMin < 0 || cfg.BackoffMax < 0:
		return bad("backoff must be >= 0, got %v..%v", cfg.BackoffMin, cfg.BackoffMax)
	case len(children) == 0:
		return bad("no children")
	}
	cfg.MaxRestarts = cmpOr(cfg.MaxRestarts, defaultMaxRestarts)
	cfg.Period = cmpOr(cfg.Period, defaultPeriod)
	cfg.BackoffMin = cmpOr(cfg.BackoffMin, defaultBackoffMin)
	cfg.BackoffMax = cmpOr(cfg.BackoffMax, defaultBackoffMax)
	if cfg.BackoffMax < cfg.BackoffMin {
		return bad("BackoffMax %v < BackoffMin %v", cfg.BackoffMax, cfg.BackoffMin)
	}

	children = slices.Clone(children)
	seen := make(map[string]bool, len(children))
	for i, c := range children {
		children[i].Shutdown = cmpOr(c.Shutdown, defaultShutdown)
		switch {
		case c.Name == "":
			return bad("child %d has no name", i)
		case seen[c.Name]:
			return bad("duplicate child name %q", c.Name)
		case c.Run == nil:
			return bad("child %q has no Run", c.Name)
		case c.Restart < Permanent || c.Restart > Temporary:
			return bad("child %q: unknown restart type %v", c.Name, c.Restart)
		}
		seen[c.Name] = true
	}
	return &Supervisor{cfg: cfg, children: children}, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Name returns the supervisor's name.
func (s *Supervisor) Name() string { return s.cfg.Name }

// Spec returns a ChildSpec that runs s, so that s can be a child of another
// supervisor. If s gives up, its ErrRestartIntensity error is the failure
// the parent sees — the escalation of OTP. Its Shutdown is infinite: s
// bounds the stopping of its own children.
func (s *Supervisor) Spec(restart Restart) ChildSpec {
	return ChildSpec{Name: s.cfg.Name, Run: s.Run, Restart: restart, Shutdown: -1}
}

// Run starts the children in order and supervises them. It returns:
//
//   - nil when ctx is done, after stopping the children in reverse start
//     order and waiting for each to return (at most its Shutdown: a child
//     that ignores its context is abandoned, see ChildAbandoned);
//   - nil when every child has exited and none is to be restarted (all
//     Temporary, or Transient and successful);
//   - an error wrapping ErrRestartIntensity (and the last child failure)
//     when more than MaxRestarts restarts happened within Period, after
//     stopping all children;
//   - ErrAlreadyRunning if s is already running.
//
// A panic in a child is recovered and treated as the child failing with a
// *PanicError. Run does not return before every child goroutine it started
// has returned, except one abandoned after its Shutdown. Run may be called again after it returned (as it is when a
// parent supervisor restarts it); each Run starts from a clean state.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: supervisor %q", ErrAlreadyRunning, s.cfg.Name)
	}
	defer s.running.Store(false)
	if ctx.Err() != nil {
		return nil // nothing to supervise; do not start children only to stop them
	}

	r := newSupervision(ctx, s)
	defer r.wait()
	return r.loop()
}
