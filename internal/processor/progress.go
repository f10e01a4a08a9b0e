package processor

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/pkg/envelope"
)

// storeProgress stores a progress report of d's running job and announces
// it. A pending announcement (an earlier change stored without its event)
// is published first; while it cannot be, no further change is stored, so
// the job's seqs never get a gap. A change stored whose event cannot be
// published is left pending (d.unannounced) rather than given up: the next
// change of the run — another progress report or the outcome (apply) —
// publishes it first, and if the run ends without that, the Nak'd
// redelivery does (EnsurePublished).
//
// pv, when not nil, is a new preview of the job (previews.go): the event
// names it (Snapshot.Preview).
func (p *Processor) storeProgress(ctx context.Context, d *delivery, pct int, pv *envelope.Preview) error {
	if err := p.announcePending(ctx, d); err != nil {
		return err
	}
	snap, rev, err := p.store.ApplyAt(ctx, d.snap, d.rev, envelope.TypeProgress, func(s *envelope.Snapshot) error {
		if s.Status != envelope.StatusRunning {
			return errSkip
		}
		s.Progress = pct
		if pv != nil {
			s.Preview = pv
		}
		return nil
	})
	if err == nil || errors.Is(err, jobstore.ErrNotPublished) {
		d.snap, d.rev = snap, rev
	}
	if errors.Is(err, jobstore.ErrNotPublished) {
		// Stored: announce that snapshot, never store the change again.
		if err = p.store.Publish(ctx, envelope.TypeProgress, snap); err != nil {
			d.unannounced = envelope.TypeProgress
		}
	}
	return err
}

// announcePending publishes the event of d.snap when it is stored but not
// yet announced (d.unannounced) — and only when EVENTS lacks it: a cancel
// written over d.snap meanwhile published it first (whoever writes seq N+1
// makes sure N's event exists), and a copy stored after the cancel's event
// would put the job's events out of order once the duplicate window is over.
func (p *Processor) announcePending(ctx context.Context, d *delivery) error {
	if d.unannounced == "" {
		return nil
	}
	err := p.store.EnsurePublishedAs(ctx, d.unannounced, d.snap)
	if err != nil && !errors.Is(err, jobstore.ErrSeqGap) {
		return &pendingError{seq: d.snap.Seq, err: err}
	}
	d.unannounced = ""
	return nil
}

// pendingError is a change not attempted because the previous change's
// event is still unpublished. Nothing new was stored; it is deliberately
// not ErrNotPublished (that means "this change is stored").
type pendingError struct {
	seq uint64
	err error
}

func (e *pendingError) Error() string {
	return fmt.Sprintf("processor: event of seq %d still not published: %v", e.seq, e.err)
}

func (e *pendingError) Unwrap() error { return e.err }

// progress turns a provider's Progress calls (and the stored previews,
// previews.go) into progress events without slowing the provider down: a
// call only records the value; one goroutine per job at a time stores it,
// and a burst of calls while it is busy collapses into the last value (last
// one wins, never more than one write in flight per job). The goroutine
// only exists while there is something to store.
type progress struct {
	store func(pct int, pv *envelope.Preview)

	mu      sync.Mutex
	latest  int
	sent    int
	preview *envelope.Preview // newest stored preview not yet announced
	busy    bool
	closed  bool
	flushed sync.WaitGroup
}

func newProgress(store func(int, *envelope.Preview)) *progress {
	return &progress{store: store, sent: -1}
}

// report is the provider's Progress callback.
func (p *progress) report(pct int) {
	pct = min(max(pct, 0), 100)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.latest = pct
	p.kick()
}

// showPreview announces a stored preview with the next progress event.
func (p *progress) showPreview(pv envelope.Preview) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.preview = &pv
	p.kick()
}

// kick starts the loop when there is something new; p.mu is held.
func (p *progress) kick() {
	if p.busy || (p.latest == p.sent && p.preview == nil) {
		return
	}
	p.busy = true
	p.flushed.Add(1)
	go p.loop()
}

func (p *progress) loop() {
	defer p.flushed.Done()
	for {
		p.mu.Lock()
		v, pv := p.latest, p.preview
		if v == p.sent && pv == nil {
			p.busy = false
			p.mu.Unlock()
			return
		}
		p.preview = nil
		p.mu.Unlock()
		p.store(max(v, 0), pv)
		p.mu.Lock()
		p.sent = v
		p.mu.Unlock()
	}
}

// close ignores later reports (an abandoned provider call may still make
// them) and waits until the last reported value is stored, so that the
// job's final event comes after its last progress event.
func (p *progress) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.flushed.Wait()
}
