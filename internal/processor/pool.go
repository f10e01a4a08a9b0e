package processor

import (
	"context"
	"fmt"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// The supervision tree of a running processor (every supervisor one-for-one,
// its events counted in beamline_supervisor_events_total and its restarts in
// beamline_supervisor_restarts_total):
//
//	processor
//	├── heartbeats        InProgress for every held message (deliveries.go)
//	├── workers           the worker pool: a supervisor of its own
//	│   └── worker:1..N   pick and run deliveries (worker.go)
//	├── pull:<consumer>   one puller per consumer (consumer.go)
//	├── cancel            cancel.<user>.<job> notices (cancel.go)
//	├── ops               /metrics /healthz /readyz
//	└── metrics           consumer and DLQ gauges
//
// Children stop in reverse start order, which is the shutdown order: the
// pullers stop first, then the pool drains (hands back what is not running,
// lets running jobs finish within Grace), and the heartbeats stop last, so
// messages held during the grace period keep being heartbeated.

// childShutdown bounds how long a child that is not the pool may take to
// return once cancelled (beyond its own wait, e.g. PollWait for a puller),
// before it is reported and left behind (flow.ChildAbandoned).
const childShutdown = 5 * time.Second

// handBackBudget is how long the pool may take, after the grace period, to
// hand back the runs it cancelled (their last writes and Naks).
const handBackBudget = 30 * time.Second

// poolShutdown bounds the pool's drain: Grace for running jobs, then the
// hand-back of those cancelled at its end.
func (p *Processor) poolShutdown() time.Duration { return p.cfg.Grace + handBackBudget }

// runHeartbeats is the heartbeats child.
func (p *Processor) runHeartbeats(ctx context.Context) error {
	if h := p.hooks.heartbeatsStarted; h != nil {
		h()
	}
	return p.deliveries.runHeartbeats(ctx, p.cfg.AckWait/3)
}

// runWorkers is the worker pool, a child of the processor's supervisor. Its
// Concurrency workers are children of a supervisor of their own, "workers"
// (Transient: a worker that crashes is restarted; one that returns after the
// pool's stop signal is not). If that supervisor gives up, the pool returns
// its error and the processor's supervisor restarts the pool (deliveries
// still in the ready queues wait for the new workers). When ctx is done the
// pool drains (drain) and returns nil.
func (p *Processor) runWorkers(ctx context.Context) error {
	stopPick := make(chan struct{})
	pool := newRunnerPool(p.cfg.Concurrency)
	specs := make([]flow.ChildSpec, p.cfg.Concurrency)
	for i := range specs {
		specs[i] = flow.ChildSpec{
			Name:     fmt.Sprintf("worker:%d", i+1),
			Restart:  flow.Transient,
			Shutdown: p.poolShutdown(),
			Run:      func(ctx context.Context) error { return p.work(ctx, stopPick, pool) },
		}
	}
	sup, err := flow.NewSupervisor(flow.SupervisorConfig{Name: "workers", OnEvent: p.onSupervisorEvent}, specs...)
	if err != nil {
		return err
	}
	// The workers' supervisor is not stopped by ctx: on shutdown the pool
	// closes stopPick, so every worker stops picking at once, and each
	// returns when its current run ends.
	supCtx, stopSup := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSup()
	done := make(chan error, 1)
	go func() { done <- sup.Run(supCtx) }()
	select {
	case err := <-done:
		close(pool.quit)
		return err
	case <-ctx.Done():
	}
	// The drain waits for the workers and for every runner, detached
	// waits included (inflight.go).
	all := make(chan struct{})
	go func() {
		<-done
		close(pool.quit) // no worker lends any more: idle runners end
		p.runners.Wait()
		close(all)
	}()
	p.drain(stopPick, all)
	return nil
}

// drain is the pool's shutdown: nothing waits for admission (nor for an
// in-flight slot, nor for a worker after a detached wait) any more, the
// workers stop picking, what waits in the waiting room is Nak'd (without
// delay) so another processor takes it at once, running jobs — awaiting
// remote work or not — may finish within Grace and are cancelled after it,
// and what is left in the ready queues is Nak'd.
func (p *Processor) drain(stopPick chan struct{}, done <-chan struct{}) {
	p.stopWaiting()
	close(stopPick)
	parked := p.fair.close()
	for _, d := range parked {
		p.m.waiting.Dec()
		p.nak(d, 0)
	}
	grace := time.NewTimer(p.cfg.Grace)
	select {
	case <-done:
	case <-grace.C:
		p.log.Warn("grace period over: cancelling running jobs", "grace", p.cfg.Grace)
		p.cancelJobs()
		<-done
	}
	grace.Stop()
	left := p.ready.drain()
	for _, d := range left {
		p.nak(d, 0)
	}
	p.log.Info("processor stopped", "handed_back", len(left)+len(parked))
}
