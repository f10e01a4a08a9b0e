package processor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/pkg/envelope"
)

// A first delivery claims its job before the provider is called, and its
// started write is deferred (Config.StartedDelay).
//
// The claim (jobstore.Claim) creates the job's snapshot as `running`, this
// run's attempt, at seq 0 and without an event, by compare-and-set ("no
// key yet"), and without reading the job first. From then on GET and joins
// say running, and a cancel is a compare-and-set after the claim: a
// cancel of a running job, which stops the call and counts its attempt. A
// cancel stored before the claim makes the claim fail: the run reads the
// job, finds it terminal and never calls the provider. So a job DELETE
// reports as cancelled while queued never reaches its provider. A claim
// that finds any snapshot stored (a cancel, a duplicate message, an earlier
// run) is followed by the read and checks of a redelivery.
//
// The claim takes no seq, so seqs stay contiguous: the run's first event is
// its outcome, or running at seq 1 with its started event once the job has
// run StartedDelay. A job that reaches its outcome within the delay is
// never announced started: its events are just its outcome (seq 1), one
// seq step, one event; its KV writes are the claim and the outcome (its
// first delivery reads nothing). So `started` announces only jobs that take
// time. The outcome snapshot carries the attempt number all the same.
//
// Attempts stay counted (attempts.go): a process that dies after the claim
// leaves the job running with this attempt, and its redelivery counts it.
// Every delivery but the first (and every run with StartedDelay ≤ 0) reads
// the job and writes running before it calls the provider.
//
// The started write happens at most once, whoever comes first: the timer, a
// progress report (progress needs a running snapshot with its event), or —
// when it already began — the outcome, which waits for it. The outcome
// cancels it otherwise.

// claim claims d's job for a first delivery with a deferred start; false
// (and no error) when the run must read the job instead: not a first
// delivery, StartedDelay ≤ 0, or a snapshot is stored already.
func (p *Processor) claim(ctx context.Context, d *delivery) (bool, error) {
	if d.delivered != 1 || p.cfg.StartedDelay <= 0 {
		return false, nil
	}
	snap, rev, err := p.store.Claim(ctx, d.job, 1)
	if errors.Is(err, jobstore.ErrExists) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	d.snap, d.rev, d.attempt, d.claimed = snap, rev, 1, true
	return true, nil
}

// startState is where a deferred start is.
type startState int

const (
	startPending startState = iota // not written; the timer may still fire
	startWriting                   // being written, or written (done closed when over)
	startSkipped                   // the outcome came first: never written
)

// starter is the started write of one run. It is kept small: a run that
// waits on remote work holds it for the whole wait (docs/design.md#waiting-jobs-hold-no-worker),
// so once the write is over it keeps neither its timer, nor a channel of
// its own, nor the snapshot written (callers want that only on an error).
type starter struct {
	p      *Processor
	ctx    context.Context
	d      *delivery
	cancel context.CancelFunc // stops the provider call when the write fails

	mu     sync.Mutex
	state  startState
	timer  *time.Timer
	done   chan struct{}      // made when the write begins; closedChan once it is over
	failed *envelope.Snapshot // the snapshot a failed write returned
	err    error
}

// closedChan is the done of every write that is over.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// newStarter defers the started write of d by delay; delay ≤ 0 means now
// (the caller then calls ensure).
func (p *Processor) newStarter(ctx context.Context, d *delivery, cancel context.CancelFunc, delay time.Duration) *starter {
	s := &starter{p: p, ctx: ctx, d: d, cancel: cancel}
	if delay > 0 {
		s.mu.Lock() // ensure, on the timer's goroutine, clears it
		s.timer = time.AfterFunc(delay, func() { _, _ = s.ensure() })
		s.mu.Unlock()
	}
	return s
}

// resultLocked is the write's outcome, once it is over (under mu).
func (s *starter) resultLocked() (envelope.Snapshot, error) {
	if s.failed != nil {
		return *s.failed, s.err
	}
	return envelope.Snapshot{}, s.err
}

// ensure writes the start unless it was written or skipped, and returns the
// write's result (errStartSkipped when the outcome came first). The
// snapshot it returns is meaningful only with an error (the stored one a
// terminal job has, for skipTerminal).
func (s *starter) ensure() (envelope.Snapshot, error) {
	s.mu.Lock()
	switch s.state {
	case startSkipped:
		s.mu.Unlock()
		return envelope.Snapshot{}, errStartSkipped
	case startWriting:
		done := s.done
		s.mu.Unlock()
		<-done
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.resultLocked()
	}
	s.state = startWriting
	if s.timer != nil {
		s.timer.Stop() // a no-op when it is what called
		s.timer = nil
	}
	done := make(chan struct{})
	s.done = done
	s.mu.Unlock()
	snap, err := s.p.writeStarted(s.ctx, s.d)
	if err != nil {
		// The run must not go on as if started: stop the call; the
		// worker acts on the error once the call returned.
		s.cancel()
	}
	s.mu.Lock()
	if err != nil {
		s.failed, s.err = &snap, err
	}
	s.done = closedChan
	s.mu.Unlock()
	close(done)
	return snap, err
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
			s.timer = nil
		}
		fallthrough
	case startSkipped:
		s.mu.Unlock()
		return true, envelope.Snapshot{}, nil
	}
	done := s.done
	s.mu.Unlock()
	<-done
	s.mu.Lock()
	defer s.mu.Unlock()
	snap, err = s.resultLocked()
	return false, snap, err
}

// writeStarted stores running and announces it. The attempt is checked
// against the snapshot actually written over, not only load's read: when the
// compare-and-set at that revision loses (the read was stale, or another run
// wrote meanwhile) apply re-reads, and the attempt must be that snapshot's
// attempt + 1 so a crashed run recorded since is counted (after a claim:
// the claim's own attempt). If that is not d.attempt (the number this run
// was admitted with, which the provider call, MaxDeliver and the outcome
// use), nothing is stored: errAttemptMoved, the run is Nak'd and its
// redelivery counts from what is stored. (d.attempt is not changed here: a
// deferred start runs beside the provider call.)
func (p *Processor) writeStarted(ctx context.Context, d *delivery) (envelope.Snapshot, error) {
	over := d.attempt - 1 // the attempt of the snapshot this run was admitted from
	if d.claimed {
		over = d.attempt // this run's claim
	}
	return p.apply(ctx, d, envelope.TypeStarted, func(s *envelope.Snapshot) error {
		if s.Attempt != over {
			return fmt.Errorf("%w: stored attempt %d, this run %d", errAttemptMoved, s.Attempt, d.attempt)
		}
		s.Status = envelope.StatusRunning
		s.Attempt = d.attempt
		s.Progress = 0
		s.Preview = nil // an earlier attempt's picture
		s.Error = ""
		return nil
	})
}

var (
	errStartSkipped = errors.New("processor: start skipped")
	errAttemptMoved = errors.New("processor: the job's attempt changed since it was read")
)
