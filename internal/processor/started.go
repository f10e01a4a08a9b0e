package processor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
)

// The started write is deferred (Config.StartedDelay). A job that reaches
// its outcome within the delay is never stored as running and gets no
// started event: its first change goes straight from queued to the outcome
// (one seq step, one KV write and one event instead of two of each). So
// `running`/`started` announce only jobs that actually take time; a fast job's
// events are just its outcome (seq 1). The outcome snapshot carries the
// attempt number all the same.
//
// Attempts stay counted (attempts.go): only a first delivery defers. A
// process that dies inside the window leaves the snapshot queued, so the
// crashed run is not counted — but every redelivery writes running before it
// calls the provider, so a job that crashes its process at once is counted
// from its second run on and is dead-lettered after at most MaxDeliver + 1
// runs, never redelivered forever.
//
// The write happens at most once, whoever comes first: the timer, a
// progress report (progress needs a running snapshot), or — when it already
// began — the outcome, which waits for it. The outcome cancels it otherwise.

// startState is where a deferred start is.
type startState int

const (
	startPending startState = iota // not written; the timer may still fire
	startWriting                   // being written, or written (done closed when over)
	startSkipped                   // the outcome came first: never written
)

// starter is the started write of one run.
type starter struct {
	p      *Processor
	ctx    context.Context
	d      *delivery
	cancel context.CancelFunc // stops the provider call when the write fails

	mu    sync.Mutex
	state startState
	timer *time.Timer
	done  chan struct{}
	snap  envelope.Snapshot // the write's result
	err   error
}

// newStarter defers the started write of d by delay; delay ≤ 0 means now
// (the caller then calls ensure).
func (p *Processor) newStarter(ctx context.Context, d *delivery, cancel context.CancelFunc, delay time.Duration) *starter {
	s := &starter{p: p, ctx: ctx, d: d, cancel: cancel, done: make(chan struct{})}
	if delay > 0 {
		s.timer = time.AfterFunc(delay, func() { _, _ = s.ensure() })
	}
	return s
}

// ensure writes the start unless it was written or skipped, and returns the
// write's result (errStartSkipped when the outcome came first).
func (s *starter) ensure() (envelope.Snapshot, error) {
	s.mu.Lock()
	switch s.state {
	case startSkipped:
		s.mu.Unlock()
		return envelope.Snapshot{}, errStartSkipped
	case startWriting:
		s.mu.Unlock()
		<-s.done
		return s.snap, s.err
	}
	s.state = startWriting
	s.mu.Unlock()
	s.snap, s.err = s.p.writeStarted(s.ctx, s.d)
	if s.err != nil {
		// The run must not go on as if started: stop the call; the
		// worker acts on the error once the call returned.
		s.cancel()
	}
	close(s.done)
	return s.snap, s.err
}

// skipOrAwait is called when the call is over (and, deferred, whenever the run
// ends, so no timer writes a start after a panic): it skips a start not yet begun
// (true: the outcome is the job's first change of this run), or waits for
// the one under way and returns its result.
func (s *starter) skipOrAwait() (skipped bool, snap envelope.Snapshot, err error) {
	s.mu.Lock()
	switch s.state {
	case startPending:
		s.state = startSkipped
		if s.timer != nil {
			s.timer.Stop()
		}
		fallthrough
	case startSkipped:
		s.mu.Unlock()
		return true, envelope.Snapshot{}, nil
	}
	s.mu.Unlock()
	<-s.done
	return false, s.snap, s.err
}

// writeStarted stores running and announces it. The attempt is checked
// against the snapshot actually written over, not only load's read: when the
// compare-and-set at that revision loses (the read was stale, or another run
// wrote meanwhile) apply re-reads, and the attempt must be that snapshot's
// attempt + 1 so a crashed run recorded since is counted. If that is not
// d.attempt (the number this run was admitted with, which the provider call,
// MaxDeliver and the outcome use), nothing is stored: errAttemptMoved, the
// run is Nak'd and its redelivery counts from what is stored. (d.attempt is
// not changed here: a deferred start runs beside the provider call.)
func (p *Processor) writeStarted(ctx context.Context, d *delivery) (envelope.Snapshot, error) {
	return p.apply(ctx, d, envelope.TypeStarted, func(s *envelope.Snapshot) error {
		if s.Attempt+1 != d.attempt {
			return fmt.Errorf("%w: stored attempt %d, this run %d", errAttemptMoved, s.Attempt, d.attempt)
		}
		s.Status = envelope.StatusRunning
		s.Attempt = d.attempt
		s.Progress = 0
		s.Error = ""
		return nil
	})
}

var (
	errStartSkipped = errors.New("processor: start skipped")
	errAttemptMoved = errors.New("processor: the job's attempt changed since it was read")
)
