package processor

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/flow"
)

// Waits that hold no worker (docs/design.md#waiting-jobs-hold-no-worker).
//
// A worker does not run a delivery on its own goroutine: it starts a
// runner goroutine for it and lends it a lease, then waits until the
// lease is released. A run of a resuming provider (handles.go) releases it
// as soon as its remote work's handle is stored (detach): the worker goes
// back to picking while the runner awaits the remote outcome. The delivery
// stays held meanwhile (heartbeats, cancel by job id), and so do its user's
// slot (per-user fairness) and its provider's in-flight slot. Once the wait
// ends the runner asks for a worker again (rejoin: a queue the workers pick
// from before the ready queues) and writes the outcome — keeping outputs
// may download files — on the lease that worker lends it. Concurrency so
// bounds work done in this process, and -provider-inflight bounds remote
// work awaited.
//
// While the pool drains (shutdown) nobody lends leases any more: a rejoin
// then goes on without one, and the drain waits for every runner (pool.go).

// lease is a worker lent to a runner, until release.
type lease struct {
	once     sync.Once
	released chan struct{}
}

func newLease() *lease { return &lease{released: make(chan struct{})} }

func (l *lease) release() {
	if l != nil {
		l.once.Do(func() { close(l.released) })
	}
}

// runner is the goroutine that runs one delivery and the deliveries its
// user's slot is handed over to (worker.go, handle).
type runner struct {
	lease atomic.Pointer[lease]
}

// rejoin is a runner waiting for a worker; state: 0 waiting, 1 taken by a
// worker (a lease is coming on got), 2 given up (the pool drains).
type rejoin struct {
	state atomic.Int32
	got   chan *lease
}

// rejoinQueue holds runners waiting for a worker. Unbounded, but never
// longer than the runs this process awaits.
type rejoinQueue struct {
	mu   sync.Mutex
	q    []*rejoin
	wake chan struct{} // 1-buffered: something was pushed
}

func newRejoinQueue() *rejoinQueue { return &rejoinQueue{wake: make(chan struct{}, 1)} }

func (r *rejoinQueue) push(w *rejoin) {
	r.mu.Lock()
	r.q = append(r.q, w)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *rejoinQueue) pop() *rejoin {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.q) == 0 {
		return nil
	}
	w := r.q[0]
	r.q[0] = nil
	r.q = r.q[1:]
	if len(r.q) > 0 {
		// Leave the wake set for the next worker.
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	return w
}

// lend runs d on a runner goroutine with this worker's lease and returns
// when the lease is released: the run (and its hand-overs) ended, or it
// detached to wait. The runner is an idle one from pool when one waits, a
// new goroutine otherwise.
func (p *Processor) lend(d *delivery, pool *runnerPool) {
	rn := &runner{}
	l := newLease()
	rn.lease.Store(l)
	t := runTask{d: d, rn: rn}
	select {
	case pool.tasks <- t:
	default:
		p.runners.Add(1)
		go p.runnerLoop(pool, t)
	}
	<-l.released
}

// A runner goroutine, once its run ends, waits a while for the next
// delivery a worker lends (runnerPool) instead of ending. A run goes deep
// (decoding the job, the store's writes, encoding the event), and a fresh
// goroutine grows its stack to that depth, copying it each time it
// doubles: 8 % of the pipeline's CPU per no-op job (BENCHMARKS.md, Run W)
// before runners were kept. A runner waits runnerIdle at most; not at all
// when as many runners as there are workers wait already (runs that
// detached end together when their waits do, each with a deep stack), nor
// once the pool drains: the drain's wait for every runner then ends with
// the runs.
const runnerIdle = 2 * time.Second

// runnerPool is where idle runners wait: tasks is unbuffered, so a lend
// hands its delivery to a runner only if one is waiting at that moment.
// One per run of the worker pool (runWorkers), handed to its workers;
// quit is closed when they are done.
type runnerPool struct {
	tasks chan runTask
	quit  chan struct{}
	idle  atomic.Int64 // runners waiting, at most max
	max   int64
}

func newRunnerPool(workers int) *runnerPool {
	return &runnerPool{tasks: make(chan runTask), quit: make(chan struct{}), max: int64(workers)}
}

// runTask is one delivery lent to a runner.
type runTask struct {
	d  *delivery
	rn *runner
}

// runnerLoop runs t, then the tasks lent to it while it waits in pool.
func (p *Processor) runnerLoop(pool *runnerPool, t runTask) {
	defer p.runners.Done()
	var idle *time.Timer
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()
	for {
		p.runTask(t)
		t = runTask{} // what it ran is not kept alive while it waits
		if pool.idle.Add(1) > pool.max {
			pool.idle.Add(-1)
			return
		}
		if idle == nil {
			idle = time.NewTimer(runnerIdle)
		} else {
			idle.Reset(runnerIdle)
		}
		select {
		case t = <-pool.tasks:
			pool.idle.Add(-1)
		case <-idle.C:
			pool.idle.Add(-1)
			return
		case <-pool.quit:
			pool.idle.Add(-1)
			return
		}
	}
}

// runTask runs one delivery and releases the lease its run holds.
func (p *Processor) runTask(t runTask) {
	defer func() { t.rn.lease.Swap(nil).release() }()
	p.handle(t.d, t.rn)
}

// serve lends this worker to a runner that rejoins, if it still waits.
func (p *Processor) serve(w *rejoin) {
	if !w.state.CompareAndSwap(0, 1) {
		return
	}
	l := newLease()
	w.got <- l
	<-l.released
}

// detach gives d's worker back to the pool; d's runner goes on without one.
// Called once d's remote work is stored (or while it waits for an
// in-flight slot). A no-op after rejoin.
func (p *Processor) detach(d *delivery) bool {
	if d.runner == nil || !d.away.CompareAndSwap(0, 1) {
		return false
	}
	p.m.detached.Inc()
	d.runner.lease.Swap(nil).release()
	return true
}

// Parked waits (docs/design.md#waiting-jobs-hold-no-worker). A detached
// wait on a stored handle would keep two goroutines: the runner, blocked
// deep in the run (whose stack the claim and the create grew), and the
// call's boundary goroutine running Await. Instead the call parks: the
// boundary goroutine leaves the Await it would make in d.wait and returns
// errParked, the run returns (its deferred work kept, worker.go: unwind),
// the runner goroutine is done with it (it ends, or waits idle for another
// delivery: runnerLoop), and one fresh goroutine awaits — a shallow stack,
// holding only Await's frames — then rejoins and runs the rest of the run
// on the worker lent to it, as the runner would have.

// errParked is what the call's boundary returns when it parked; not an
// outcome.
var errParked = errors.New("processor: remote wait parked")

// parkedWait is the Await a parked call makes.
type parkedWait struct {
	r   provider.Resumable
	h   provider.Handle
	req provider.Request
}

// park starts d's parked wait (d.wait) with the job's context jctx and
// what is left of the call's timeout, and hands its outcome to then. The
// wait gets a runner of its own: the ending runner goroutine still
// releases the one it ran on.
func (p *Processor) park(jctx context.Context, d *delivery, timeout time.Duration, start time.Time, then func(json.RawMessage, error)) {
	w := d.wait
	d.wait = nil
	rn := &runner{}
	d.runner = rn
	p.runners.Add(1)
	resume := func(result json.RawMessage, err error) {
		defer p.runners.Done()
		defer func() { rn.lease.Swap(nil).release() }()
		then(result, err)
	}
	pk, ok := w.r.(provider.Parker)
	if !ok {
		go func() { resume(p.awaitParked(jctx, w, timeout, start)) }()
		return
	}
	// No goroutine at all until something happens: the provider calls
	// back on one of its own. The wait gets jctx itself, not a deadline
	// context of its own: a timer ends the wait at the timeout instead.
	// Of 10,000 waits each such context would hold a timer, its Done
	// channel and the children map of its AfterFunc (~0.5 KB); the
	// provider's AfterFunc joins jctx's map, which the call's boundary
	// made already. A wait ended by the timer stays registered at the
	// provider until the run ends jctx (its unwind): what it reports then
	// is dropped, and settleRemote has cancelled its work.
	var (
		ended atomic.Bool                // the first report wins; later ones return at once
		timer atomic.Pointer[time.Timer] // set after it may have fired
	)
	finish := func(result json.RawMessage, err error) {
		if !ended.CompareAndSwap(false, true) {
			return
		}
		if t := timer.Load(); t != nil {
			t.Stop()
		}
		resume(result, err)
	}
	done := func(result json.RawMessage, err error) {
		finish(boundaryResult(jctx, jctx, timeout, result, err))
	}
	if timeout > 0 {
		timer.Store(time.AfterFunc(time.Until(start.Add(timeout)), func() {
			finish(nil, &flow.TimeoutError{Timeout: timeout})
		}))
	}
	if err := (flow.Boundary{}).Do(jctx, func(ctx context.Context) error {
		pk.Park(ctx, w.h, w.req, done)
		return nil
	}); err != nil {
		go done(nil, err) // Park panicked
	}
}

// boundaryResult reports the end of a parked wait's ctx as flow.Boundary
// would: the end of jctx (a DELETE, the end of the grace) as its error,
// the end of the timeout as a *flow.TimeoutError.
func boundaryResult(ctx, jctx context.Context, timeout time.Duration, result json.RawMessage, err error) (json.RawMessage, error) {
	if err != nil && ctx.Err() != nil {
		if jerr := jctx.Err(); jerr != nil {
			return nil, jerr
		}
		return nil, &flow.TimeoutError{Timeout: timeout}
	}
	return result, err
}

// awaitParked is the call's boundary for a parked wait, on its goroutine:
// a panic is a *flow.PanicError, the end of the timeout a
// *flow.TimeoutError, the end of jctx (a DELETE, the end of the grace) its
// error — as flow.Boundary reports them. Unlike it, the wait is not
// abandoned when ctx ends: Await returns then (both providers' waits
// select on ctx).
func (p *Processor) awaitParked(jctx context.Context, w *parkedWait, timeout time.Duration, start time.Time) (json.RawMessage, error) {
	ctx := jctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(jctx, start.Add(timeout))
		defer cancel()
	}
	var result json.RawMessage
	err := flow.Boundary{}.Do(ctx, func(ctx context.Context) error {
		res, err := w.r.Await(ctx, w.h, w.req)
		if err == nil {
			result = res
		}
		return err
	})
	return boundaryResult(ctx, jctx, timeout, result, err)
}

// rejoin ends d's detached wait: the runner waits for a worker to lend it
// a lease (none while the pool drains). After it d does not detach again.
func (p *Processor) rejoin(d *delivery) {
	if d.runner == nil || d.away.Swap(2) != 1 {
		return
	}
	p.m.detached.Dec()
	w := &rejoin{got: make(chan *lease, 1)}
	p.rejoins.push(w)
	select {
	case l := <-w.got:
		d.runner.lease.Store(l)
	case <-p.stopCtx.Done():
		if !w.state.CompareAndSwap(0, 2) {
			d.runner.lease.Store(<-w.got)
		}
	}
}

// inflightLimit bounds the remote work of one provider this process
// awaits or starts (Config.ProviderInflight).
type inflightLimit struct {
	mu    sync.Mutex
	limit int
	used  int
	freed chan struct{} // closed and replaced when a slot is freed
}

func newInflightLimit(n int) *inflightLimit {
	return &inflightLimit{limit: n, freed: make(chan struct{})}
}

func (l *inflightLimit) tryAcquire() (ok bool, freed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.used < l.limit {
		l.used++
		return true, nil
	}
	return false, l.freed
}

// acquire waits for a slot until ctx ends.
func (l *inflightLimit) acquire(ctx context.Context) error {
	for {
		ok, freed := l.tryAcquire()
		if ok {
			return nil
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *inflightLimit) release() {
	l.mu.Lock()
	l.used--
	close(l.freed)
	l.freed = make(chan struct{})
	l.mu.Unlock()
}

// waitRoom waits until a slot is free (without taking it) or ctx ends:
// the pullers of the provider's kinds do not pull while it is full.
func (l *inflightLimit) waitRoom(ctx context.Context) error {
	for {
		l.mu.Lock()
		free, freed := l.used < l.limit, l.freed
		l.mu.Unlock()
		if free {
			return nil
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *inflightLimit) inUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.used
}

// takeInflight takes an in-flight slot of d's provider when it resumes
// (only remote work is limited); while none is free the run detaches and
// waits, holding no worker. It returns the release (idempotent), or false
// when the pool drained first (the caller hands the delivery back).
func (p *Processor) takeInflight(d *delivery) (release func(), ok bool) {
	prov := p.kindProviders[d.kind]
	lim := p.inflight[prov.Name()]
	if _, remote := p.resumer(prov); !remote || lim == nil {
		return func() {}, true
	}
	if got, _ := lim.tryAcquire(); !got {
		p.detach(d)
		err := lim.acquire(p.stopCtx)
		p.rejoin(d)
		d.away.Store(0) // detaches again once its handle is stored
		if err != nil {
			return nil, false
		}
	}
	name, model := providerLabels(prov.Name())
	gauge := p.m.predictions.WithLabelValues(name, model)
	gauge.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			gauge.Dec()
			lim.release()
		})
	}, true
}

// providerLabels splits a provider's name into the provider and model
// labels of its metrics: "replicate:owner/name" is replicate and
// owner/name; "cog" is cog and no model.
func providerLabels(name string) (prov, model string) {
	prov, model, _ = strings.Cut(name, ":")
	return prov, model
}

// waitInflightRoom waits while the resuming provider of kind has no free
// in-flight slot: its pullers do not pull what could only wait.
func (p *Processor) waitInflightRoom(ctx context.Context, kind string) error {
	prov := p.kindProviders[kind]
	if _, remote := p.resumer(prov); !remote {
		return nil
	}
	if lim := p.inflight[prov.Name()]; lim != nil {
		return lim.waitRoom(ctx)
	}
	return nil
}
