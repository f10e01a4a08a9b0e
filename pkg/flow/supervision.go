package flow

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// supervision is the state of one Supervisor.Run. It is owned by the Run
// goroutine; child goroutines only send on exits.
type supervision struct {
	s   *Supervisor
	ctx context.Context // Run's context: when it is done, the supervisor stops
	// base is the parent of every child context: ctx's values without its
	// cancellation, so that the supervisor, not the runtime, decides when and
	// in which order (reverse start order) children are cancelled.
	base     context.Context
	children []*childState
	// exits receives one childExit per launched child goroutine. Its buffer
	// holds one per child, and a child is relaunched only after its exit was
	// received, so child goroutines never block on it.
	exits chan childExit
	// pending holds exits received while stopping other children, handled
	// next by the loop.
	pending  []childExit
	restarts []time.Time // restarts within Period, for the intensity check
}

type childState struct {
	spec     ChildSpec
	running  bool // launched and its exit not yet received
	cancel   context.CancelFunc
	cur      *launch     // the current (or last) launch
	restarts int         // restarts during this Run
	recent   []time.Time // this child's restarts within Period, for backoff
}

// launch is one start of a child's goroutine.
type launch struct {
	done chan struct{} // closed when the goroutine has returned
	// abandoned is closed when the supervisor stops waiting for the
	// goroutine (Shutdown passed): its exit is then never received, so it
	// must not block on sending it.
	abandoned chan struct{}
}

type childExit struct {
	idx      int
	from     *launch
	err      error
	panicked bool
}

func newSupervision(ctx context.Context, s *Supervisor) *supervision {
	r := &supervision{
		s:     s,
		ctx:   ctx,
		base:  context.WithoutCancel(ctx),
		exits: make(chan childExit, len(s.children)),
	}
	for _, spec := range s.children {
		r.children = append(r.children, &childState{spec: spec})
	}
	return r
}

func (r *supervision) loop() error {
	for i := range r.children {
		r.launch(i, 0)
	}
	for {
		if len(r.pending) == 0 && !r.anyRunning() {
			return nil
		}
		ex, ok := r.next()
		if !ok {
			r.stopAll()
			return nil
		}
		if err := r.handle(ex); err != nil {
			r.stopAll()
			return err
		}
	}
}

// launch starts child i's goroutine, which waits delay before calling Run.
func (r *supervision) launch(i int, delay time.Duration) {
	c := r.children[i]
	ctx, cancel := context.WithCancel(r.base)
	l := &launch{done: make(chan struct{}), abandoned: make(chan struct{})}
	c.running, c.cancel, c.cur = true, cancel, l
	r.emit(SupervisorEvent{Child: c.spec.Name, Kind: ChildStarted, Restarts: c.restarts})
	go func() {
		defer close(l.done)
		defer cancel()
		ex := childExit{idx: i, from: l}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				ex.err = ctx.Err()
				r.send(ex)
				return
			}
		}
		ex.err = call(ctx, c.spec.Run)
		_, ex.panicked = ex.err.(*PanicError) // not errors.As: a child returning a wrapped panic did not panic
		r.send(ex)
	}()
}

// send delivers a child's exit, unless the supervisor has abandoned it.
// exits holds one exit per child, and a child is relaunched only after its
// exit was received or it was abandoned, so only an abandoned child can find
// the buffer full.
func (r *supervision) send(ex childExit) {
	select {
	case r.exits <- ex:
	case <-ex.from.abandoned:
	}
}

// wait blocks until every launched goroutine that was not abandoned has
// returned.
func (r *supervision) wait() {
	for _, c := range r.children {
		if l := c.cur; l != nil {
			select {
			case <-l.done:
			case <-l.abandoned:
			}
		}
	}
}

// next returns the next exit to handle, or false once ctx is done.
func (r *supervision) next() (childExit, bool) {
	if len(r.pending) > 0 {
		ex := r.pending[0]
		r.pending = r.pending[1:]
		return ex, true
	}
	select {
	case ex := <-r.exits:
		if !r.received(ex) {
			return r.next()
		}
		return ex, true
	case <-r.ctx.Done():
		return childExit{}, false
	}
}

// received marks the child of ex stopped and waits for its goroutine to
// return; false for the exit of a launch that was abandoned (to be ignored).
func (r *supervision) received(ex childExit) bool {
	c := r.children[ex.idx]
	if ex.from != c.cur || !c.running {
		return false
	}
	c.running = false
	c.cancel()
	<-ex.from.done
	return true
}

// stop cancels child i and waits for it to return, at most its Shutdown:
// a child still running then is abandoned (ChildAbandoned) and treated as
// stopped. Exits of other children arriving meanwhile are queued in pending.
func (r *supervision) stop(i int) {
	c := r.children[i]
	if !c.running {
		return
	}
	c.cancel()
	var timeout <-chan time.Time
	if d := c.spec.Shutdown; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	for c.running {
		select {
		case ex := <-r.exits:
			if !r.received(ex) {
				continue
			}
			if ex.idx == i {
				r.emitExit(ex)
			} else {
				r.pending = append(r.pending, ex)
			}
		case <-timeout:
			c.running = false
			close(c.cur.abandoned)
			r.emit(SupervisorEvent{Child: c.spec.Name, Kind: ChildAbandoned, Restarts: c.restarts,
				Err: fmt.Errorf("%w: child %q still running %v after it was cancelled", ErrShutdownTimeout, c.spec.Name, c.spec.Shutdown)})
		}
	}
}

// stopAll stops every child in reverse start order and reports the exits
// still pending. Nothing is restarted.
func (r *supervision) stopAll() {
	for i := len(r.children) - 1; i >= 0; i-- {
		r.stop(i)
	}
	for _, ex := range r.pending {
		r.emitExit(ex)
	}
	r.pending = nil
}

// handle reacts to one child exit. It returns an error when the supervisor
// gives up.
func (r *supervision) handle(ex childExit) error {
	r.emitExit(ex)
	c := r.children[ex.idx]
	if r.ctx.Err() != nil || !shouldRestart(c.spec.Restart, ex.err) {
		return nil
	}

	now := time.Now()
	r.restarts = r.pruned(append(r.restarts, now), now)
	if len(r.restarts) > r.s.cfg.MaxRestarts {
		return r.giveUp(c, ex.err)
	}
	c.recent = r.pruned(append(c.recent, now), now)
	delay := Backoff(len(c.recent), r.s.cfg.BackoffMin, r.s.cfg.BackoffMax, backoffJitter, nil)

	group := []int{ex.idx}
	for _, j := range r.siblings(ex.idx) {
		s := r.children[j]
		if s.running {
			r.stop(j)
			if s.spec.Restart != Temporary {
				group = append(group, j)
			}
			continue
		}
		// A sibling that exited on its own while we were stopping others:
		// restart it with the group rather than on its own later.
		if k := slices.IndexFunc(r.pending, func(p childExit) bool { return p.idx == j }); k >= 0 {
			p := r.pending[k]
			if shouldRestart(s.spec.Restart, p.err) {
				r.pending = slices.Delete(r.pending, k, k+1)
				r.emitExit(p)
				group = append(group, j)
			}
		}
	}
	slices.Sort(group) // restart in start order
	for _, j := range group {
		s := r.children[j]
		s.restarts++
		r.emit(SupervisorEvent{Child: s.spec.Name, Kind: ChildRestarting, Err: ex.err, Restarts: s.restarts, Backoff: delay})
		r.launch(j, delay)
	}
	return nil
}

// siblings returns the children that the strategy restarts together with
// child i, in reverse start order (the order they are stopped in).
func (r *supervision) siblings(i int) []int {
	var from int
	switch r.s.cfg.Strategy {
	case OneForAll:
		from = 0
	case RestForOne:
		from = i + 1
	default:
		return nil
	}
	var out []int
	for j := len(r.children) - 1; j >= from; j-- {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

func (r *supervision) giveUp(c *childState, cause error) error {
	cfg := r.s.cfg
	err := fmt.Errorf("%w: supervisor %q: more than %d restarts in %v",
		ErrRestartIntensity, cfg.Name, cfg.MaxRestarts, cfg.Period)
	if cause != nil {
		err = fmt.Errorf("%w; last failure: child %q: %w", err, c.spec.Name, cause)
	} else {
		err = fmt.Errorf("%w; last exit: child %q returned nil", err, c.spec.Name)
	}
	r.emit(SupervisorEvent{Child: c.spec.Name, Kind: SupervisorGaveUp, Err: err, Restarts: len(r.restarts)})
	return err
}

// pruned drops the times older than Period before now.
func (r *supervision) pruned(times []time.Time, now time.Time) []time.Time {
	cutoff := now.Add(-r.s.cfg.Period)
	i := 0
	for i < len(times) && !times[i].After(cutoff) {
		i++
	}
	return times[i:]
}

func (r *supervision) anyRunning() bool {
	return slices.ContainsFunc(r.children, func(c *childState) bool { return c.running })
}

func (r *supervision) emitExit(ex childExit) {
	c := r.children[ex.idx]
	kind := ChildExited
	if ex.panicked {
		kind = ChildPanicked
	}
	r.emit(SupervisorEvent{Child: c.spec.Name, Kind: kind, Err: ex.err, Restarts: c.restarts})
}

func (r *supervision) emit(ev SupervisorEvent) {
	if r.s.cfg.OnEvent != nil {
		ev.Supervisor = r.s.cfg.Name
		r.s.cfg.OnEvent(ev)
	}
}

func shouldRestart(restart Restart, err error) bool {
	switch restart {
	case Permanent:
		return true
	case Transient:
		return err != nil
	default:
		return false
	}
}
