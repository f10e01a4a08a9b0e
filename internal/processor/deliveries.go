package processor

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
)

// delivery is one message this process holds, from the pull until its
// Ack/Nak/Term.
type delivery struct {
	msg     jetstream.Msg
	prio    envelope.Priority
	kind    string
	credits *credits
	id      uint64 // key in deliveries

	// Set by the worker after decoding.
	job       envelope.Job
	delivered int    // JetStream's delivery count: backoff of Naks, safety net
	streamSeq uint64 // the message's JOBS stream sequence

	// Set by the worker when it runs the job: the number of this run (from
	// the stored snapshot, not the delivery count), and the snapshot and
	// KV revision of the job's last write, so the next write is a
	// compare-and-set at a known revision (jobstore.ApplyAt).
	attempt int
	snap    envelope.Snapshot
	rev     uint64
	// start is the run's started write (started.go); claimed: the run
	// began by claiming the job (running at seq 0, no event), so its
	// snapshot already records the attempt.
	start   *starter
	claimed bool
	// unannounced is the event type of d.snap when d.snap is stored but
	// its event is not confirmed published (a progress write whose
	// publish failed twice); "" otherwise. The next change of this run
	// publishes it first (announcePending), so every stored seq gets its
	// event and in order. Written and read by one writer at a time (the
	// run's writes are serial: start, progress, outcome).
	unannounced envelope.Type

	// handle is the run's remote work, once started or resumed (a
	// provider.Resumable, handles.go); atomic: the provider call may outlive
	// the run's wait for it (the timeout abandons it).
	handle atomic.Pointer[provider.Handle]
	// wait is the Await a call that parks leaves for park (inflight.go):
	// written by the call's boundary goroutine before it returns
	// errParked, read by the run once the boundary returned it.
	wait *parkedWait
	// timing is what the provider reported of the run's terminal
	// prediction (telemetry.go).
	timing        atomic.Pointer[provider.Timing]
	startsCounted bool // the job's end was counted in remote starts

	// runner runs the delivery (inflight.go); away is 1 while the run
	// waits detached from a worker, 2 once it rejoined for good.
	runner *runner
	away   atomic.Int32

	// cancel cancels the running job's context; set while it runs.
	cancel    context.CancelFunc
	cancelled atomic.Bool // cancelled by a cancel.<user>.<job> message
}

const shardCount = 16

// deliveries knows every held message, to heartbeat them (InProgress every
// AckWait/3 — one ticker for all messages rather than a timer per job) and
// to find a running job by id when its cancel message arrives. Sharded: every
// job enters and leaves it twice.
type deliveries struct {
	next   atomic.Uint64
	seed   maphash.Seed
	held   [shardCount]heldShard
	byJob  [shardCount]jobShard
	logger *slog.Logger
}

type heldShard struct {
	mu sync.Mutex
	m  map[uint64]*delivery
}

type jobShard struct {
	mu sync.Mutex
	m  map[string]*delivery
}

func newDeliveries(log *slog.Logger) *deliveries {
	r := &deliveries{seed: maphash.MakeSeed(), logger: log}
	for i := range r.held {
		r.held[i].m = make(map[uint64]*delivery)
		r.byJob[i].m = make(map[string]*delivery)
	}
	return r
}

// hold registers a pulled message for heartbeats.
func (r *deliveries) hold(d *delivery) {
	d.id = r.next.Add(1)
	s := &r.held[d.id%shardCount]
	s.mu.Lock()
	s.m[d.id] = d
	s.mu.Unlock()
}

// release forgets a message once it was acked, nak'd or termed.
func (r *deliveries) release(d *delivery) {
	s := &r.held[d.id%shardCount]
	s.mu.Lock()
	delete(s.m, d.id)
	s.mu.Unlock()
}

// running makes d findable by job id while its provider call runs.
func (r *deliveries) running(d *delivery, cancel context.CancelFunc) {
	s := &r.byJob[maphash.String(r.seed, d.job.ID)%shardCount]
	s.mu.Lock()
	d.cancel = cancel
	s.m[d.job.ID] = d
	s.mu.Unlock()
}

func (r *deliveries) stopped(d *delivery) {
	s := &r.byJob[maphash.String(r.seed, d.job.ID)%shardCount]
	s.mu.Lock()
	if s.m[d.job.ID] == d {
		delete(s.m, d.job.ID)
	}
	s.mu.Unlock()
}

// cancelJob cancels the running job id, if this process runs it.
func (r *deliveries) cancelJob(id string) bool {
	s := &r.byJob[maphash.String(r.seed, id)%shardCount]
	s.mu.Lock()
	d := s.m[id]
	s.mu.Unlock()
	if d == nil {
		return false
	}
	d.cancelled.Store(true)
	d.cancel()
	return true
}

// heartbeat sends InProgress for every held message.
func (r *deliveries) heartbeat() {
	var batch []*delivery
	for i := range r.held {
		s := &r.held[i]
		batch = batch[:0]
		s.mu.Lock()
		for _, d := range s.m {
			batch = append(batch, d)
		}
		s.mu.Unlock()
		for _, d := range batch {
			if err := d.msg.InProgress(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				r.logger.Warn("heartbeat failed", "job", d.job.ID, "kind", d.kind, "err", err)
			}
		}
	}
}

// runHeartbeats heartbeats every interval until ctx is done.
func (r *deliveries) runHeartbeats(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.heartbeat()
		}
	}
}
