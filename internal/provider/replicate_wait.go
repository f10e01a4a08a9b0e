package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

var _ Parker = (*replicateProvider)(nil)

// replicateWaitBuffer is how many webhook deliveries a wait keeps unread:
// beyond it an update is lost, never a final delivery (the oldest update
// makes room), as the processor's Watch channels do.
const replicateWaitBuffer = 16

// replicateWait is one parked Await (Park): no goroutine while nothing
// happens. A webhook delivery, its timer or the end of its ctx queue an
// event and start a stepping goroutine when none runs; the goroutine
// works through the events as Await's loop did (at most one at a time, so
// the steps are serial), then ends.
type replicateWait struct {
	p        *replicateProvider
	ctx      context.Context
	id       string
	getURL   string
	progress *progressTracker
	done     func(json.RawMessage, error)

	mu        sync.Mutex
	stepping  bool
	ended     bool
	queue     []WebhookDelivery
	due       bool // the current timer fired
	gen       int  // the current timer's generation
	timer     *time.Timer
	stopWatch func()
	stopCtx   func() bool
	preview   json.RawMessage // the newest stream output not reported yet
	// pollNow asks for a poll at once (the stream said done or error);
	// unlike due, re-arming the timer does not clear it.
	pollNow bool

	// The stream goroutine (Stream): cancelled and waited for by finish.
	// streamed: one was started (a wait reads a prediction's stream once).
	stopStream  context.CancelFunc
	streamEnded chan struct{}
	streamed    bool

	// Only the stepping goroutine reads and writes these.
	try, bad int
	quiet    bool
}

// Park implements Parker. With webhooks it first reads the job's last
// final delivery (a prediction that ended while no processor waited, one
// direct get), then waits for the deliveries and polls only after Quiet
// without one, then with backoff until the next delivery. Only a delivery
// of prediction h.ID counts: ingest checked its signature, not that it is
// about this job's work.
func (p *replicateProvider) Park(ctx context.Context, h Handle, req Request, done func(json.RawMessage, error)) {
	w := &replicateWait{p: p, ctx: ctx, id: h.ID, progress: newRequestTracker(req), done: done, try: 1, quiet: p.hooks != nil}
	p.mu.Lock()
	pred, ok := p.finished[h.ID]
	delete(p.finished, h.ID)
	streamURL := p.streams[h.ID]
	delete(p.streams, h.ID)
	p.mu.Unlock()
	if ok {
		go w.finishWith(func() (json.RawMessage, error) { return p.outcome(h.ID, pred, w.progress) })
		return
	}
	w.getURL = p.sameOrigin(h.GetURL, "/v1/predictions/"+url.PathEscape(h.ID))
	// Armed before anything can start a step: from then on only the
	// stepping goroutine touches the loop's state.
	w.mu.Lock()
	w.armLocked(w.wait())
	w.mu.Unlock()
	if p.hooks != nil {
		w.mu.Lock()
		w.stopWatch = watchFunc(p.hooks, envelope.WebhookReplicate, req.Job.ID, w.deliver)
		w.mu.Unlock()
		if d, ok, err := p.hooks.LastFinal(ctx, envelope.WebhookReplicate, req.Job.ID); err == nil && ok {
			if pred, mine := replicateDelivery(h.ID, d); mine && pred.terminal() {
				w.deliver(d) // ends the wait, serially with the other steps
			}
		}
	}
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.kickLocked() // steps sees ctx ended
		w.mu.Unlock()
	})
	w.mu.Lock()
	w.stopCtx = stop
	ended := w.ended
	if streamURL != "" {
		w.startStreamLocked(streamURL)
	}
	w.mu.Unlock()
	if ended {
		stop()
	}
}

// startStreamLocked starts reading the prediction's stream at url, unless
// the wait ended or already read one. w.mu is held.
func (w *replicateWait) startStreamLocked(url string) {
	if w.ended || w.streamed {
		return
	}
	w.streamed = true
	sctx, cancel := context.WithCancel(w.ctx)
	w.stopStream, w.streamEnded = cancel, make(chan struct{})
	go w.stream(sctx, url)
}

// streamFrom starts reading the stream pred names, for a wait that has
// none: a wait resumed by another process (after a crash or a restart) does
// not know the urls.stream of the create's answer, and learns it from the
// first prediction it sees, polled or delivered. Followed on the API's
// origin only, as at the create.
func (w *replicateWait) streamFrom(pred replicatePrediction) {
	su := pred.URLs["stream"]
	if !w.p.stream || su == "" || w.p.sameOrigin(su, "") != su {
		return
	}
	w.mu.Lock()
	w.startStreamLocked(su)
	w.mu.Unlock()
}

// wait is how long to wait for a delivery before polling.
func (w *replicateWait) wait() time.Duration {
	if w.quiet {
		return w.p.quiet
	}
	return flow.Backoff(w.try, w.p.pollMin, w.p.pollMax, 0.2, nil)
}

// armLocked replaces the timer: only the newest one's firing counts.
func (w *replicateWait) armLocked(d time.Duration) {
	if w.ended {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	w.gen++
	w.due = false
	gen := w.gen
	w.timer = time.AfterFunc(d, func() {
		w.mu.Lock()
		if gen == w.gen {
			w.due = true
			w.kickLocked()
		}
		w.mu.Unlock()
	})
}

// deliver queues a webhook delivery (from the source's dispatch: never
// blocks).
func (w *replicateWait) deliver(d WebhookDelivery) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	if len(w.queue) >= replicateWaitBuffer {
		if !d.Final {
			return
		}
		w.queue = w.queue[1:]
	}
	w.queue = append(w.queue, d)
	w.kickLocked()
}

// kickLocked starts the stepping goroutine unless it runs.
func (w *replicateWait) kickLocked() {
	if w.stepping || w.ended {
		return
	}
	w.stepping = true
	go w.step()
}

// step works through the queued events, in a boundary: a panic ends the
// wait with a *flow.PanicError.
func (w *replicateWait) step() {
	var res json.RawMessage
	var end bool
	err := flow.Boundary{}.Do(context.Background(), func(context.Context) error {
		var err error
		res, err, end = w.steps()
		return err
	})
	if end || err != nil {
		w.finish(res, err)
	}
}

// steps is the body of Await's loop, one event at a time, until none is
// left (end false) or the wait is over.
func (w *replicateWait) steps() (json.RawMessage, error, bool) {
	p := w.p
	for {
		w.mu.Lock()
		if err := w.ctx.Err(); err != nil {
			w.mu.Unlock()
			return nil, flow.Retryable(fmt.Errorf("replicate provider: prediction %s: %w", w.id, err), 0), true
		}
		var d WebhookDelivery
		got := len(w.queue) > 0
		if got {
			d = w.queue[0]
			w.queue[0] = WebhookDelivery{}
			w.queue = w.queue[1:]
			if len(w.queue) == 0 {
				w.queue = nil
			}
		}
		due := !got && (w.due || w.pollNow)
		pv := w.preview
		w.preview = nil
		if !got && !due && pv == nil {
			w.stepping = false
			w.mu.Unlock()
			return nil, nil, false
		}
		if due {
			w.due, w.pollNow = false, false
		}
		w.mu.Unlock()
		if pv != nil {
			w.progress.output(pv)
			if !got && !due {
				continue
			}
		}

		if got {
			pred, mine := replicateDelivery(w.id, d)
			if !mine {
				continue // does not cut the wait short
			}
			if pred.terminal() {
				res, err := p.outcome(w.id, pred, w.progress)
				return res, err, true
			}
			w.progress.fromLogs(pred.logs())
			w.progress.output(pred.Output)
			w.streamFrom(pred)
			w.quiet = true
			w.rearm()
			continue
		}
		// Nothing came for the whole wait: poll, and go on polling with
		// backoff until a delivery comes.
		w.quiet = false
		pred, err := p.do(w.ctx, http.MethodGet, w.getURL, nil, 0)
		var th *errThrottled
		var se *StatusError
		switch {
		case err == nil:
			w.bad = 0
			if pred.ID != w.id {
				return nil, flow.Retryable(fmt.Errorf("%w: replicate answered prediction %q when asked for %q", ErrInvalidResponse, pred.ID, w.id), 0), true
			}
			if pred.terminal() {
				res, err := p.outcome(w.id, pred, w.progress)
				return res, err, true
			}
			w.progress.fromLogs(pred.logs())
			w.progress.output(pred.Output)
			w.streamFrom(pred)
			w.try++
		case w.ctx.Err() != nil:
			return nil, flow.Retryable(fmt.Errorf("replicate provider: prediction %s: %w", w.id, w.ctx.Err()), 0), true
		case errors.As(err, &th):
			if werr := p.pause(w.ctx, th.wait); werr != nil {
				return nil, werr, true
			}
		case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
			return nil, flow.Retryable(fmt.Errorf("%w: replicate prediction %s is gone: %w", ErrRemote, w.id, se), 0), true
		case flow.IsTerminal(err):
			return nil, err, true
		case errors.Is(err, ErrInvalidResponse):
			if w.bad++; w.bad >= DefaultReplicateBadAnswers {
				return nil, err, true
			}
			w.try++
		default:
			// 5xx, a cut connection: the prediction runs on; poll again.
			w.try++
		}
		w.rearm()
	}
}

func (w *replicateWait) rearm() {
	d := w.wait()
	w.mu.Lock()
	w.armLocked(d)
	w.mu.Unlock()
}

// finishWith ends the wait with what f returns, in a boundary.
func (w *replicateWait) finishWith(f func() (json.RawMessage, error)) {
	w.mu.Lock()
	ended := w.ended
	w.mu.Unlock()
	if ended {
		return // a delivery ended it first
	}
	var res json.RawMessage
	err := flow.Boundary{}.Do(context.Background(), func(context.Context) error {
		var err error
		res, err = f()
		return err
	})
	w.finish(res, err)
}

// finish ends the wait once: its timer, watch and ctx hook are let go of,
// and done gets the outcome.
func (w *replicateWait) finish(res json.RawMessage, err error) {
	w.mu.Lock()
	if w.ended {
		w.mu.Unlock()
		return
	}
	w.ended = true
	w.queue = nil
	if w.timer != nil {
		w.timer.Stop()
	}
	stopWatch, stopCtx := w.stopWatch, w.stopCtx
	stopStream, streamEnded := w.stopStream, w.streamEnded
	w.mu.Unlock()
	if stopWatch != nil {
		stopWatch()
	}
	if stopCtx != nil {
		stopCtx()
	}
	if stopStream != nil {
		stopStream()
		<-streamEnded // no goroutine outlives the wait
	}
	w.done(res, err)
}
