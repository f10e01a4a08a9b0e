package processor

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
)

// reporter is a provider that reports progress 50 when told to, then
// returns when released.
type reporter struct {
	report  chan struct{}
	release chan struct{}
}

func (r *reporter) Name() string { return "reporter" }

func (r *reporter) Call(ctx context.Context, req provider.Request) (json.RawMessage, error) {
	for _, ch := range []chan struct{}{r.report, r.release} {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Second):
			return nil, errors.New("reporter: not driven")
		}
		if ch == r.report {
			req.Progress(50)
		}
	}
	return json.RawMessage(`{"ok":true}`), nil
}

// startReporter starts the processor with a reporter provider; stored gets
// the error of every progress change the processor stores.
func (e *env) startReporter() (*reporter, <-chan error) {
	e.t.Helper()
	prov := &reporter{report: make(chan struct{}), release: make(chan struct{})}
	stored := make(chan error, 1)
	e.startWith(withProvider(baseConfig(e.t), prov), func(p *Processor) {
		p.hooks.progressStored = func(_ *delivery, _ int, err error) { stored <- err }
	})
	return prov, stored
}

// waitProgressRefused fails unless the next progress change is stored
// with its event refused.
func (e *env) waitProgressRefused(stored <-chan error) {
	e.t.Helper()
	select {
	case err := <-stored:
		if err == nil {
			e.t.Fatal("progress published with EVENTS refusing publishes")
		}
	case <-time.After(10 * time.Second):
		e.t.Fatal("progress never stored")
	}
}

// Minor 2: a progress change is stored but EVENTS refuses its event (and
// the immediate re-publish). The next change must announce it first, so
// the job's events still have every seq.
func TestProgressPublishFailureLeavesNoSeqGap(t *testing.T) {
	e := newEnv(t)
	prov, stored := e.startReporter()
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	restore := e.breakEventsOnceRunning(j)
	close(prov.report)
	e.waitProgressRefused(stored)
	if s := e.snapshot(j.ID); s.Seq != 2 || s.Progress != 50 {
		t.Fatalf("snapshot %+v, want the progress stored at seq 2", s)
	}
	restore()
	close(prov.release)

	e.waitStatus(j.ID, envelope.StatusSucceeded, 15*time.Second)
	e.waitJobsEmpty()
	evs := e.checkSeqs(j, envelope.StatusSucceeded)
	if len(evs) != 3 || evs[1].Progress != 50 {
		t.Fatalf("events %+v, want started, progress 50, succeeded", evs)
	}
}
