package notifier

import (
	"context"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/phoenix"
	"github.com/beamline/beamline/pkg/envelope"
)

// event is one thing to push to a topic's subscribers. Events read from the
// stream carry both sequences; server broadcasts carry neither.
type event struct {
	name      string // the Phoenix event name ("job")
	payload   []byte // JSON object, encoded once for every subscriber
	short     string // the short envelope type ("progress")
	jobSeq    uint64
	streamSeq uint64
	at        time.Time // the envelope's time, for the latency metric
	terminal  bool
	trace     eventTrace // for the push span (zero: not traced)
	late      bool       // read to fill a gap after a later event of another job went out
	// mark is the topic's contiguous watermark when the topic handed the
	// event out (0: not handed out by a topic, e.g. a join's replay).
	mark uint64
	// replayed: read by a user-topic join's replay, which returns every
	// event on the filter after the client's last_seq in stream order.
	replayed bool
}

// sink is where a subscription's events go: a WebSocket connection or an
// SSE stream. Neither method may block.
type sink interface {
	deliver(sb *sub, ev *event)
	// end tells the subscriber the server ended the subscription with
	// event (phx_close or phx_error) and payload.
	end(sb *sub, event string, payload []byte)
}

// sub is one (connection, topic) subscription. The fields below sink are
// guarded by the sink's own lock.
type sub struct {
	topic   string
	kind    topicKind
	joinRef phoenix.Ref
	sink    sink

	last      uint64   // highest key delivered (job seq, or stream seq for user topics)
	base      uint64   // the last key the join itself covered (snapshot and replay)
	replaying bool     // join in progress: live events wait in pending
	pending   []*event // live events that arrived during the join
	closed    bool     // left, replaced, or ended by the server
	// resume (user topics) is the highest stream seq R such that every
	// event of the topic up to R reached this subscriber (pushed, or
	// covered by its join): the resume_seq of its pushes.
	resume uint64
	// joinMark is the topic's watermark right after sb was added (set by
	// hub.add on the joining goroutine): every event up to it was stored
	// before the join read its snapshot or replay.
	joinMark uint64
	// joinPos is the topic's position right after sb was added: every
	// event the topic handled before is at or below it, so the join's
	// snapshot and replay must cover the stream up to it (later events
	// reach sb through the topic).
	joinPos  uint64
	endFrame []byte // phx_close/phx_error that ended it during the join, sent after the join's pushes
}

// key is what a subscription de-duplicates and orders by.
func (sb *sub) key(ev *event) uint64 {
	if sb.kind == kindUser {
		return ev.streamSeq
	}
	return ev.jobSeq
}

// fresh reports whether ev is new for sb, and records it. Events without
// sequences (broadcasts) are always fresh. A late event (a gap filled on one
// job of a user topic after another job's later event went out) is new when
// the join did not cover it: the topic delivers each stream seq once, so it
// cannot be a duplicate.
func (sb *sub) fresh(ev *event) bool {
	k := sb.key(ev)
	if k == 0 {
		return true
	}
	if k > sb.last {
		sb.last = k
		return true
	}
	return ev.late && sb.kind == kindUser && k > sb.base
}

const shardCount = 64

// hub maps topics to their subscribers, sharded so that fan-out on one topic
// does not contend with joins on another.
type hub struct {
	s      *Service
	seed   maphash.Seed
	shards [shardCount]hubShard
	lanes  [laneCount]lane
}

type hubShard struct {
	mu     sync.RWMutex
	topics map[string]*topic
}

// topic is one joined topic on this notifier: its subscribers and, for
// stream-fed topics, the core NATS subscription on the live subject.
type topic struct {
	name    string
	subject string // stream subject filter, "" for server-local topics (admin:metrics)
	subs    map[*sub]struct{}
	list    atomic.Pointer[[]*sub]

	ready chan struct{} // closed once started (err set on failure)
	err   error
	nsub  *nats.Subscription

	// mu serializes delivery on the topic: live messages, gap fills and
	// refills after a reconnect. Lock order: mu, then a sink's lock.
	mu    sync.Mutex
	ended bool   // closed by the server (closeTopic) or dropped by the last subscriber
	start uint64 // the stream's last seq when the topic began: older events are the joiners' business
	pos   uint64 // highest stream seq delivered
	// mark is the contiguous watermark: every event on subject with a
	// stream seq ≤ mark was handled. Only a sweep that read the whole
	// filter moves it (reconcile, refill), never a live message: on a user
	// topic a live event of one job says nothing about the others.
	mark     uint64
	last     map[string]uint64 // subject → stream seq of the last event delivered on it, when above mark
	live     uint64            // stream seq of the last live message handled
	dropped  uint64            // the subscription's dropped count when last looked at
	finished bool              // a job topic that delivered its job's terminal event: nothing more to check
	due      time.Time         // next reconciliation (the sweeper's)
	fails    int               // sweeps in a row that could not read the topic (the sweeper's)
	// stale is set by a lane that could not fill a gap: the sweeper
	// reconciles the topic on its next tick.
	stale atomic.Bool
}

func newHub(s *Service) *hub {
	h := &hub{s: s, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].topics = map[string]*topic{}
	}
	for i := range h.lanes {
		h.lanes[i] = lane{ch: make(chan *nats.Msg, s.cfg.laneDepth), subs: map[*nats.Subscription]*topic{}}
	}
	return h
}

func (h *hub) hash(name string) uint64 { return maphash.String(h.seed, name) }

func (h *hub) shard(name string) *hubShard {
	return &h.shards[h.hash(name)%shardCount]
}

func (t *topic) refresh() {
	l := make([]*sub, 0, len(t.subs))
	for sb := range t.subs {
		l = append(l, sb)
	}
	t.list.Store(&l)
}

// add subscribes sb to its topic, creating the topic (and its NATS
// subscription on the live copy of subject) when sb is the first. It
// returns once the topic is live: from then on every event stored after the
// topic's start position reaches sb.
func (h *hub) add(sb *sub, subject string) error {
	sh := h.shard(sb.topic)
	sh.mu.Lock()
	t := sh.topics[sb.topic]
	created := t == nil
	if created {
		t = &topic{name: sb.topic, subject: subject, subs: map[*sub]struct{}{}, ready: make(chan struct{})}
		if subject != "" {
			t.last = map[string]uint64{}
		}
		sh.topics[sb.topic] = t
	}
	t.subs[sb] = struct{}{}
	t.refresh()
	sh.mu.Unlock()
	if created {
		h.start(t)
	}
	<-t.ready
	if t.err != nil {
		h.remove(sb)
		return t.err
	}
	t.mu.Lock()
	sb.joinMark, sb.joinPos = t.mark, max(t.pos, t.mark)
	t.mu.Unlock()
	return nil
}

func (h *hub) start(t *topic) {
	defer close(t.ready)
	if t.subject == "" {
		return
	}
	// Live messages wait until the start position is known.
	t.mu.Lock()
	defer t.mu.Unlock()
	fail := func(err error) {
		t.err = err
		sh := h.shard(t.name)
		sh.mu.Lock()
		if sh.topics[t.name] == t {
			delete(sh.topics, t.name)
		}
		sh.mu.Unlock()
	}
	// Subscribe first, then read the stream's position: every event stored
	// after that position is re-published to the subscription.
	nsub, err := h.subscribeLive(t)
	if err != nil {
		fail(err)
		return
	}
	ctx, cancel := context.WithTimeout(h.s.ctx, 5*time.Second)
	defer cancel()
	info, err := h.s.events.Info(ctx)
	if err != nil {
		h.unsubscribeLive(t, nsub)
		fail(err)
		return
	}
	t.start, t.pos, t.mark = info.State.LastSeq, info.State.LastSeq, info.State.LastSeq
	t.nsub = nsub
	h.s.m.subscriptions.Inc()
}

// remove unsubscribes sb; the last one out drops the NATS subscription.
func (h *hub) remove(sb *sub) {
	sh := h.shard(sb.topic)
	sh.mu.Lock()
	t := sh.topics[sb.topic]
	if t == nil {
		sh.mu.Unlock()
		return
	}
	if _, ok := t.subs[sb]; !ok {
		sh.mu.Unlock()
		return
	}
	delete(t.subs, sb)
	t.refresh()
	last := len(t.subs) == 0
	if last {
		delete(sh.topics, sb.topic)
	}
	sh.mu.Unlock()
	if last {
		<-t.ready
		h.drop(t)
	}
}

// drop ends a topic whose last subscriber left: no more deliveries, and
// its NATS subscription goes.
func (h *hub) drop(t *topic) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.ended {
		t.ended = true
		h.unsubscribe(t)
	}
}

func (h *hub) unsubscribe(t *topic) {
	if t.err == nil && t.nsub != nil {
		h.unsubscribeLive(t, t.nsub)
		h.s.m.subscriptions.Dec()
	}
}

// closeTopic ends every subscription to the topic on this notifier with a
// server-initiated event: phoenix.EventClose (the client forgets the
// channel and does not rejoin) or phoenix.EventError (the client rejoins,
// with last_seq when its params carry it, so nothing is lost). It reports
// whether the topic was joined here.
func (h *hub) closeTopic(name, event string, payload []byte) bool {
	sh := h.shard(name)
	sh.mu.RLock()
	t := sh.topics[name]
	sh.mu.RUnlock()
	if t == nil {
		return false
	}
	<-t.ready
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return false
	}
	h.endLocked(t, event, payload)
	return true
}

// endLocked tells every subscriber of t that the server ended the topic
// with event, and drops t; t.mu is held. The shard lock is never held while
// taking a topic's lock, so taking it here is safe.
func (h *hub) endLocked(t *topic, event string, payload []byte) {
	sh := h.shard(t.name)
	sh.mu.Lock()
	if sh.topics[t.name] == t {
		delete(sh.topics, t.name)
	}
	sh.mu.Unlock()
	if l := t.list.Load(); l != nil {
		for _, sb := range *l {
			sb.sink.end(sb, event, payload)
		}
	}
	t.ended = true
	h.unsubscribe(t)
}

// dispatch hands ev to every subscriber of a server-fed topic on this
// notifier (Broadcast). Stream-fed topics deliver from onLive.
func (h *hub) dispatch(name string, ev *event) {
	sh := h.shard(name)
	sh.mu.RLock()
	t := sh.topics[name]
	sh.mu.RUnlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.ended {
		t.fanOut(ev)
	}
}

// deliverStored hands an event read from the stream (live or caught up) to
// every subscriber; t.mu is held.
func (t *topic) deliverStored(ev *event) {
	if ev.terminal && envelope.IsJobEventSubject(t.subject) {
		t.finished = true
	}
	ev.mark = t.mark
	t.fanOut(ev)
}

// fanOut delivers ev to every subscriber; t.mu is held.
func (t *topic) fanOut(ev *event) {
	if l := t.list.Load(); l != nil {
		for _, sb := range *l {
			sb.sink.deliver(sb, ev)
		}
	}
}

// topics returns the stream-fed topics joined on this notifier.
func (h *hub) streamTopics() []*topic {
	var out []*topic
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, t := range sh.topics {
			if t.subject != "" {
				out = append(out, t)
			}
		}
		sh.mu.RUnlock()
	}
	return out
}

// decode turns a stream message into a push event:
// {"type":"<short>","job":<snapshot>,"seq":<job seq>,"stream_seq":<stream seq>}.
// On a user: topic each push also carries "resume_seq" (added per
// subscriber, see conn.pushFrame): every event of the topic with a stream
// seq up to it has reached this subscriber, so a client that rejoins with
// last_seq = resume_seq misses nothing — not even an event delivered late
// (a gap filled on one job after a later event of another job went out,
// whose stream_seq is lower than one already pushed). stream_seq is not a
// safe resume point; the client de-duplicates the overlap per job by seq.
func (h *hub) decode(m *jetstream.RawStreamMsg) *event {
	env, snap, err := envelope.DecodeEvent(m.Data)
	if err != nil {
		h.s.log.Warn("undecodable event in stream", "subject", m.Subject, "stream_seq", m.Sequence, "err", err)
		return nil
	}
	ev := newJobEvent(env, snap, m.Sequence)
	ev.trace = h.s.traceOf(m.Header)
	return ev
}

func newJobEvent(env *envelope.Envelope, snap envelope.Snapshot, streamSeq uint64) *event {
	short := env.Type.Short()
	b := make([]byte, 0, len(env.Data)+96)
	b = append(b, `{"type":`...)
	b = strconv.AppendQuote(b, short)
	b = append(b, `,"job":`...)
	b = append(b, env.Data...)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, snap.Seq, 10)
	b = append(b, `,"stream_seq":`...)
	b = strconv.AppendUint(b, streamSeq, 10)
	b = append(b, '}')
	return &event{
		name: "job", payload: b, short: short, jobSeq: snap.Seq, streamSeq: streamSeq,
		at: env.Time, terminal: snap.Status.Terminal(),
	}
}
