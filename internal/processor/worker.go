package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// Round trips per job, on the happy path of a job submitted through ingest
// (which stores only its JOBS message, no snapshot), first delivery, with
// the default deferred start (started.go):
//
//	1. KV create  claim     (jobstore.Claim: running at seq 0, attempt 1,
//	                         no event, no read first; compare-and-set
//	                         "no key yet", so a cancel stored first wins)
//	   (provider call)
//	2. KV update  succeeded (ApplyAt at the revision step 1 returned: seq 1)
//	3. event      succeeded
//	4. Ack        (fire-and-forget; removes the message from the work queue)
//
// i.e. 3 acknowledged stream writes + 1 ack, no read. A job still running
// after Config.StartedDelay adds a KV update (running, seq 1) and its
// started event before the outcome. A run that does not claim — a
// redelivery, StartedDelay ≤ 0, or a claim that finds a snapshot — reads
// the job (KV get), then writes running and its started event before the
// call: 1 KV read, 4 writes + 1 ack. Only a lost compare-and-set (a cancel,
// a second processor) costs a read more, and the direct get that makes
// sure the snapshot it read is announced. A job published straight to JOBS
// costs the same as one submitted over HTTP. Each progress report adds one
// KV update and one event (coalesced: at most one in flight per job),
// carrying the revision too.
// A run that reads a snapshot with a seq, and a delivery of a job already
// terminal, add one direct get of the job's last event (EnsurePublished:
// publish what EVENTS lacks); a dead job adds the read and write of its DLQ
// marker.
// A provider that resumes (provider.Resumable, handles.go) adds one KV put
// per job, the handle stored before the wait (on job_handles, not
// job_status: no seq, no event), and a KV read to every run that does not
// claim; a failed remote prediction adds the put that marks it ended.
// Nothing else goes to the server per job: heartbeats are batched on one
// ticker and sent only for messages held longer than AckWait/3, the
// per-user limiter and the waiting room are in memory.

// work is one worker, a child of the "workers" supervisor (pool.go): it
// picks deliveries by weighted priority and handles them one at a time
// until stop is closed (shutdown) or ctx is done (its supervisor stops).
// Each is run on a runner goroutine the worker lends itself to (lend,
// inflight.go) until the run ends or waits detached; runners that rejoin
// after such a wait are served first.
func (p *Processor) work(ctx context.Context, stop <-chan struct{}, pool *runnerPool) error {
	r := newWRR(p.cfg.PriorityWeights)
	for {
		if h := p.hooks.beforePick; h != nil {
			h()
		}
		d, w := p.ready.pick(r, p.rejoins, stop, ctx.Done())
		switch {
		case w != nil:
			p.serve(w)
		case d != nil:
			d.credits.release(1)
			p.lend(d, pool)
		default:
			return nil
		}
	}
}

// runResult is what one run of a delivery on a worker came to. The run
// acks, naks or terms its message itself on every path it foresees; the
// result carries what is left: the panic of a run that did not end
// (err, a *flow.PanicError with its value and stack), and whether the run
// held a slot of its user that must be handed over or released.
type runResult struct {
	d    *delivery
	held bool
	err  error
	// parked: the run waits detached on a goroutine of its own (park,
	// inflight.go), which reports its result and hands its user's slot
	// over when the wait ends; nothing is left to do here.
	parked bool
}

// handle takes d from the ready queue to its Ack, Nak or Term: decoded and
// admitted by per-user fairness, it is run; then the user's next parked
// delivery, if any, is run with the same slot, and so on. Each run has its
// own error boundary (execute) and its result is reported once (report),
// so a panic Naks the delivery that panicked and the slot is handed over or
// released all the same: the user's other jobs are never stranded.
func (p *Processor) handle(d *delivery, rn *runner) {
	d.runner = rn
	p.handOver(p.execute(d, p.dispatch), rn)
}

// handOver reports res and runs the deliveries its user's slot is handed
// over to, on rn. A run that parked (park, inflight.go) does both itself
// once its wait ends.
func (p *Processor) handOver(res runResult, rn *runner) {
	for !res.parked {
		p.report(res)
		if !res.held {
			return
		}
		d := p.fair.done(res.d.job.User)
		if d == nil {
			return
		}
		p.m.waiting.Dec()
		d.runner = rn
		res = p.execute(d, func(d *delivery, res *runResult) {
			res.held = true // handed over by the user's finished run
			p.run(d, res)
		})
	}
}

// execute runs fn inside the run's error boundary: the one recover of a
// run on the worker's goroutine. (The provider call runs on a goroutine of
// its own, abandoned if it outlives the job's timeout, and is contained by
// its own flow.Boundary: its panic reaches the run as an ordinary failure,
// a *flow.PanicError the outcome code acts on.)
func (p *Processor) execute(d *delivery, fn func(*delivery, *runResult)) runResult {
	res := runResult{d: d}
	res.err = flow.Boundary{}.Do(context.Background(), func(context.Context) error {
		fn(d, &res)
		return nil
	})
	return res
}

// report acts on a run's result. A run that panicked is a bug of the
// processor's own code: it is logged and its delivery Nak'd so the job is
// redelivered — with a backoff if it was being run, at once if it panicked
// before its user's admission.
func (p *Processor) report(res runResult) {
	var pe *flow.PanicError
	if !errors.As(res.err, &pe) {
		return
	}
	d := res.d
	p.log.Error("run panicked; job will be redelivered", "job", d.job.ID, "user", d.job.User,
		"kind", d.kind, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
	var delay time.Duration
	if res.held {
		delay = p.backoff(d.delivered, nil)
	}
	p.nak(d, delay)
}

// dispatch decodes d and runs it, or parks it when its user is at the
// limit.
func (p *Processor) dispatch(d *delivery, res *runResult) {
	if !p.decode(d) {
		return
	}
	switch p.fair.admit(d) {
	case admitParked:
		p.m.waiting.Inc()
		return
	case admitFull:
		// Growing with the delivery count, so a user's surplus does not
		// spin through the consumer. It costs the job no attempt: attempts
		// are counted from the job's snapshot, when a run starts.
		p.nak(d, p.backoff(d.delivered, nil))
		return
	case admitClosed:
		p.nak(d, 0)
		return
	}
	res.held = true
	p.run(d, res)
}

// decode reads the envelope; an invalid one is dead-lettered and termed.
func (p *Processor) decode(d *delivery) bool {
	meta, err := d.msg.Metadata()
	if err != nil {
		p.invalid(d, 0, fmt.Errorf("no JetStream metadata: %w", err))
		return false
	}
	d.delivered = int(meta.NumDelivered)
	d.streamSeq = meta.Sequence.Stream
	_, job, err := envelope.DecodeJob(d.msg.Data())
	if err == nil && (job.Kind != d.kind || job.Priority != d.prio) {
		err = fmt.Errorf("job %s of kind %q priority %q arrived on %s", job.ID, job.Kind, job.Priority, d.msg.Subject())
	}
	if err == nil {
		// A job subject names its job: a message under another job's
		// name would be read by GET as that job (jobstore.Lookup).
		if _, _, id, perr := envelope.ParseJobSubject(d.msg.Subject()); perr != nil || (id != "" && id != job.ID) {
			err = fmt.Errorf("job %s arrived on %s", job.ID, d.msg.Subject())
		}
	}
	if err != nil {
		p.invalid(d, meta.Sequence.Stream, err)
		return false
	}
	d.job = job
	return true
}

// run is one attempt of a job whose user slot is held. A run whose
// remote call parks (inflight.go) sets res.parked and returns at once: the
// rest of it — the outcome, and what its defers would do — runs on the
// parked wait's goroutine when the wait ends (un holds those defers).
func (p *Processor) run(d *delivery, res *runResult) {
	j := d.job
	var un unwind
	defer func() {
		if !res.parked {
			un.run()
		}
	}()
	// Store writes use a context that survives the start of a shutdown:
	// a job finishing within the grace period must still record its end.
	ctx, span := p.startAttempt(context.Background(), d)
	un.push(func() { span.End() })
	log := p.log.With("job", j.ID, "user", j.User, "kind", j.Kind).With(telemetry.LogAttrs(ctx)...)
	// Admission by the provider's breaker comes first, before the attempt
	// is counted (the claim, or the running write): a run is counted only
	// once its provider call is sure to be made. While the breaker is open, or half-open with its probes taken,
	// the run waits here (heartbeats keep the message), costing neither an
	// attempt nor a delivery. The pullers have stopped, so only prefetched
	// messages ever wait; a shutdown meanwhile hands the message back before
	// anything was counted. A run that ends without calling (a failed write,
	// a terminal job, a panic) releases its admission without an outcome,
	// so a half-open breaker never waits for a probe that will not come
	// (done counts once: after the call's own report this is a no-op).
	// A provider whose health check fails is waited for (health.go),
	// like an open breaker, without a worker and before the attempt is
	// counted.
	if !p.waitHealthy(d) {
		p.nak(d, 0)
		return
	}
	// A resuming provider's in-flight slot comes next (inflight.go): it
	// is held until the remote work ends, and waiting for it costs
	// neither an attempt nor a worker.
	release, ok := p.takeInflight(d)
	if !ok {
		p.nak(d, 0)
		return
	}
	un.push(release)
	done, ok := p.admit(d)
	if !ok {
		p.nak(d, 0)
		return
	}
	un.push(func() { done(flow.ErrNotCalled) })

	// Findable by a cancel notice before the run's first write (its claim,
	// or the started write): ingest writes cancelled before it sends the
	// notice, so a notice arriving before that write means the write finds
	// the job terminal, and one arriving after it cancels jctx. No window
	// where it is dropped.
	jctx, cancel := context.WithCancel(p.jobBase)
	un.push(cancel)
	p.deliveries.running(d, cancel)
	un.push(func() { p.deliveries.stopped(d) })

	// A first delivery claims the job without reading it (started.go).
	// Any other run reads it: the attempt number is one more than the
	// stored snapshot's (see attempts.go).
	if p.expired(ctx, d, log) {
		return
	}
	claimed, err := p.claim(ctx, d)
	if err == nil && !claimed {
		err = p.load(ctx, d)
	}
	if h := p.hooks.afterLoad; h != nil && err == nil {
		h(d)
	}
	if err != nil {
		log.Error("cannot read the job; will retry", "err", err)
		p.nak(d, p.backoff(d.delivered, nil))
		return
	}
	if !claimed && !p.loaded(ctx, d, log) {
		return
	}
	span.SetAttributes(attribute.Int("beamline.attempt", d.attempt))
	log = log.With("attempt", d.attempt)
	p.watchDeliveries(d, log)
	if d.attempt > p.cfg.MaxDeliver {
		// A delivery past the limit is dead-lettered, not run.
		p.exhausted(ctx, d, log)
		return
	}

	// The started write: deferred by StartedDelay after a claim, and
	// skipped when the outcome comes first (started.go); otherwise now,
	// before the call (so crashed runs are counted, attempts.go).
	var delay time.Duration
	if claimed {
		delay = p.cfg.StartedDelay
	}
	d.start = p.newStarter(ctx, d, cancel, delay)
	un.push(func() { _, _, _ = d.start.skipOrAwait() })
	if delay == 0 {
		if snap, err := d.start.ensure(); err != nil {
			p.startFailed(ctx, d, snap, err, log)
			return
		}
	}
	if d.attempt == 1 {
		p.m.queueWait.WithLabelValues(j.Kind, string(j.Priority)).Observe(time.Since(j.CreatedAt).Seconds())
	}
	if h := p.hooks.beforeCall; h != nil {
		h(d)
	}

	outcome := func(result json.RawMessage, callErr error) {
		if callErr == nil {
			result, callErr = p.keepOutputs(jctx, d, result, log)
		}
		telemetry.RecordError(span, callErr)
		_, snap, err := d.start.skipOrAwait()
		if err != nil {
			p.startFailed(ctx, d, snap, err, log)
			return
		}
		p.finish(ctx, d, result, callErr, log)
	}
	result, callErr, parked := p.call(ctx, jctx, d, done, release, log, func(result json.RawMessage, callErr error) {
		// On the parked wait's goroutine: the rest of this run, in an
		// error boundary of its own as execute gives a run, then its
		// report and the hand-over of its user's slot.
		rest := runResult{d: d, held: true}
		rest.err = flow.Boundary{}.Do(context.Background(), func(context.Context) error {
			defer un.run()
			outcome(result, callErr)
			return nil
		})
		p.handOver(rest, d.runner)
	})
	if parked {
		res.parked = true
		return
	}
	outcome(result, callErr)
}

// unwind is a run's deferred work, run in reverse order by whoever ends
// the run: the run itself, or its parked wait (inflight.go).
type unwind []func()

func (u *unwind) push(f func()) { *u = append(*u, f) }

func (u *unwind) run() {
	for i := len(*u) - 1; i >= 0; i-- {
		(*u)[i]()
	}
	*u = nil
}

// loaded checks the snapshot load read against the delivery and numbers the
// attempt; false when the delivery was settled instead (dead-lettered as
// invalid, already terminal, or Nak'd while its last event is missing).
func (p *Processor) loaded(ctx context.Context, d *delivery, log *slog.Logger) bool {
	j := d.job
	if d.snap.User != j.User || d.snap.Kind != j.Kind || d.snap.Priority != j.Priority {
		// A job published straight to a subject with the id of another
		// user's (or kind's, or priority's) job: never run it against
		// that job's state — nor beside it, on another consumer.
		p.invalid(d, d.streamSeq, fmt.Errorf("job id %s collides with a job of user %q kind %q priority %q (envelope: user %q kind %q priority %q)",
			j.ID, d.snap.User, d.snap.Kind, d.snap.Priority, j.User, j.Kind, j.Priority))
		return false
	}
	if d.snap.Status.Terminal() {
		if d.snap.Status == envelope.StatusCancelled {
			// Cancelled while no processor held it: its remote work,
			// if any, is stopped too (handles.go).
			p.cancelStored(ctx, d, log)
		}
		p.skipTerminal(ctx, d, d.snap, log)
		return false
	}
	// The last change may be stored without its event (a crash, EVENTS
	// unavailable, a reply lost): announce it before the next change, so
	// seqs reach clients without a gap. Nothing to do at seq 0.
	if err := p.ensurePublished(ctx, d.snap, log); err != nil {
		log.Warn("last event not confirmed published; will retry", "seq", d.snap.Seq, "err", err)
		p.nak(d, p.backoff(d.delivered, nil))
		return false
	}
	d.attempt = d.snap.Attempt + 1
	return true
}

// startFailed acts on a failed started write: the job became terminal
// meanwhile (a cancel) → skipTerminal; otherwise Nak — it was not stored,
// or stored without its event (ErrNotPublished: the redelivery announces it
// before the next change).
func (p *Processor) startFailed(ctx context.Context, d *delivery, snap envelope.Snapshot, err error, log *slog.Logger) {
	if errors.Is(err, jobstore.ErrTerminal) {
		p.skipTerminal(ctx, d, snap, log)
		return
	}
	if errors.Is(err, errAttemptMoved) {
		log.Warn("job changed since it was read; its redelivery counts the attempt again", "err", err)
	} else {
		log.Error("cannot record start; will retry", "err", err)
	}
	p.nak(d, p.backoff(d.attempt, nil))
}

// admit waits until the breaker of d's provider admits a call, and returns
// the func that reports its outcome; false when shutdown started first.
func (p *Processor) admit(d *delivery) (done func(error), ok bool) {
	br := p.kindBreakers[d.kind]
	done, err := br.Allow()
	if err == nil {
		return done, true
	}
	p.m.providerCalls.WithLabelValues(p.kindProviders[d.kind].Name(), "breaker_open").Inc()
	done, err = br.WaitAdmitted(p.stopCtx)
	return done, err == nil
}

// call runs the provider call, admitted by the breaker (done reports its
// outcome): Boundary{Timeout} → Provider.Call, with the job's own context
// (cancelled by cancel.<user>.<job>, or when the shutdown grace runs out).
// Exactly one call per admission: never a retry here, since the run's
// attempt is counted.
//
// A remote call whose handle is stored parks (inflight.go): call returns
// parked at once, and the call's outcome goes to then, on the parked
// wait's goroutine, once the wait ends.
func (p *Processor) call(actx, jctx context.Context, d *delivery, done func(error), release func(), log *slog.Logger, then func(json.RawMessage, error)) (json.RawMessage, error, bool) {
	j := d.job
	prov := p.kindProviders[j.Kind]
	var un unwind
	parked := false
	defer func() {
		if !parked {
			un.run()
		}
	}()
	jctx, span := p.startSpan(withSpanOf(jctx, actx), "provider call", attribute.String("beamline.provider", prov.Name()))
	un.push(func() { span.End() })
	p.m.inflight.Inc()
	un.push(p.m.inflight.Dec)

	// Progress writes carry the revision too: they are serial (one in
	// flight per job) and the final write waits for them (prog.close).
	prog := newProgress(func(pct int, pv *envelope.Preview) {
		// Progress is a change of a running job: the start first.
		if _, err := d.start.ensure(); err != nil {
			return // the call is being stopped; run acts on the error
		}
		if jctx.Err() != nil {
			return // stopped: no new change
		}
		// With the run's store context, not jctx: a cancel notice or the
		// end of the grace must not cut off the reply of a write that
		// lands, or this run would not know the seq it stored.
		err := p.storeProgress(actx, d, pct, pv)
		if err != nil && !errors.Is(err, errSkip) && !errors.Is(err, jobstore.ErrTerminal) && jctx.Err() == nil {
			log.Warn("progress not recorded", "progress", pct, "err", err)
		}
		if h := p.hooks.progressStored; h != nil {
			h(d, pct, err)
		}
	})
	un.push(prog.close)
	// Previews are stored apart and announced through prog (previews.go).
	pvs := p.newPreviews(jctx, d, prog, log)
	un.push(pvs.close)

	bd := flow.Boundary{Timeout: p.cfg.timeout(j.Kind)}
	var result json.RawMessage
	start := time.Now()
	// A panic is a *flow.PanicError here (the Boundary), reported to the
	// breaker as a failure like any other.
	r, remote := p.resumer(prov)
	err := bd.Do(jctx, func(ctx context.Context) error {
		req := provider.Request{Job: j, Attempt: d.attempt, Progress: prog.report, Preview: pvs.hook(), Timing: d.reportTiming}
		var res json.RawMessage
		var err error
		if remote {
			res, err = p.callRemote(actx, ctx, d, r, req) // handles.go
		} else {
			res, err = prov.Call(ctx, req)
		}
		if err == nil {
			result = res
		}
		return err
	})
	end := func(result json.RawMessage, err error) (json.RawMessage, error) {
		defer un.run()
		return p.callEnd(actx, d, r, remote, done, release, span, pvs, prog, start, result, err, log)
	}
	if errors.Is(err, errParked) {
		parked = true
		p.park(jctx, d, bd.Timeout, start, func(result json.RawMessage, err error) {
			then(end(result, err))
		})
		return nil, nil, true
	}
	result, err = p.callEnd(actx, d, r, remote, done, release, span, pvs, prog, start, result, err, log)
	return result, err, false
}

// callEnd is the end of call: the remote work settled and its slot freed,
// the outcome reported and counted.
func (p *Processor) callEnd(actx context.Context, d *delivery, r provider.Resumable, remote bool, done func(error), release func(),
	span trace.Span, pvs *previews, prog *progress, start time.Time, result json.RawMessage, err error, log *slog.Logger) (json.RawMessage, error) {
	j := d.job
	prov := p.kindProviders[j.Kind]
	if remote {
		p.observeRemote(d, time.Since(start)) // telemetry.go
		p.settleRemote(actx, d, r, err, log)
		// The remote work is over (or handed back): its in-flight slot
		// is free, and the outcome is written on a worker again.
		release()
		p.rejoin(d)
	}
	done(err)
	p.m.duration.WithLabelValues(j.Kind).Observe(time.Since(start).Seconds())
	p.countCall(prov.Name(), j.Kind, err)
	telemetry.RecordError(span, err)
	pvs.close()  // no preview announced after this
	prog.close() // progress events all stored before the final one
	return result, err
}

func (p *Processor) countCall(name, kind string, err error) {
	outcome := "ok"
	var pe *flow.PanicError
	var te *flow.TimeoutError
	switch {
	case err == nil:
	case errors.As(err, &pe):
		outcome = "panic"
		p.m.panics.WithLabelValues(kind).Inc()
		p.log.Warn("provider panicked (contained)", "kind", kind, "err", pe, "stack", string(pe.Stack))
	case errors.As(err, &te):
		outcome = "timeout"
		p.m.timeouts.WithLabelValues(kind).Inc()
	case errors.Is(err, context.Canceled):
		outcome = "cancelled"
	case flow.IsTerminal(err):
		outcome = "terminal"
	default:
		outcome = "retryable"
	}
	p.m.providerCalls.WithLabelValues(name, outcome).Inc()
}

// backoff is the redelivery delay after attempt: exponential with jitter, or
// the provider's Retry-After hint when that is longer.
func (p *Processor) backoff(attempt int, err error) time.Duration {
	d := flow.Backoff(attempt, p.cfg.BackoffMin, p.cfg.BackoffMax, 0.2, nil)
	if h, ok := flow.RetryAfterHint(err); ok && h > d && !errors.Is(err, flow.ErrBreakerOpen) {
		d = h
	}
	return d
}

func (p *Processor) count(d *delivery, outcome string) {
	p.m.jobs.WithLabelValues(d.kind, string(d.prio), outcome).Inc()
}

// The three ways to let go of a message. Each forgets it for heartbeats and
// logs a failure with the job id (the message then comes back after
// AckWait, which the job's CAS-guarded state tolerates).

func (p *Processor) ack(d *delivery) {
	p.deliveries.release(d)
	if err := d.msg.Ack(); err != nil {
		p.log.Error("ack failed", "job", d.job.ID, "kind", d.kind, "err", err)
	}
}

func (p *Processor) nak(d *delivery, delay time.Duration) {
	p.deliveries.release(d)
	var err error
	if delay > 0 {
		err = d.msg.NakWithDelay(delay)
	} else {
		err = d.msg.Nak()
	}
	if err != nil {
		p.log.Error("nak failed", "job", d.job.ID, "kind", d.kind, "err", err)
	}
}

func (p *Processor) term(d *delivery) {
	p.deliveries.release(d)
	if err := d.msg.Term(); err != nil {
		p.log.Error("term failed", "job", d.job.ID, "kind", d.kind, "err", err)
	}
}

var errSkip = errors.New("processor: skip")
