package notifier

import (
	"context"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/envelope"
)

const shardCount = 64

// hub maps topics to their subscribers, sharded so that fan-out on one topic
// does not contend with joins on another.
type hub struct {
	hubConfig
	seed   maphash.Seed
	shards [shardCount]hubShard
	lanes  [laneCount]lane
}

type hubShard struct {
	mu     sync.RWMutex
	topics map[string]*topic
}

// hubStream is what the hub reads of the EVENTS stream (eventsReader).
type hubStream interface {
	info(ctx context.Context) (*jetstream.StreamInfo, error)
	readFrom(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg) bool) (end bool, err error)
	readBatch(ctx context.Context, subject string, seq uint64, fn func(*jetstream.RawStreamMsg)) (next uint64, more bool, err error)
	lastStreamSeqUpTo(ctx context.Context, subjects []string, upTo uint64) (map[string]uint64, error)
	nextOnLeader(ctx context.Context, filter string, seq uint64) (uint64, error)
}

var _ hubStream = (*eventsReader)(nil)

// hubConfig is what a hub works with; it never calls into the Service.
type hubConfig struct {
	ctx           context.Context // the service's: starting a topic's subscription hangs off it
	nc            *nats.Conn      // for the live subscriptions
	stream        hubStream
	log           *slog.Logger
	subscriptions prometheus.Gauge // core NATS subscriptions held
	// traceOf reads an event's trace context from its message's headers.
	traceOf func(h interface{ Get(string) string }) eventTrace
	// reconcileEvery, beforeRefill, sweepBatch and laneDepth: see Config.
	reconcileEvery time.Duration
	beforeRefill   func()
	sweepBatch     func(topic string)
	laneDepth      int
}

func newHub(cfg hubConfig) *hub {
	h := &hub{hubConfig: cfg, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].topics = map[string]*topic{}
	}
	for i := range h.lanes {
		h.lanes[i] = lane{ch: make(chan *nats.Msg, cfg.laneDepth), subs: map[*nats.Subscription]*topic{}}
	}
	return h
}

func (h *hub) hash(name string) uint64 { return maphash.String(h.seed, name) }

func (h *hub) shard(name string) *hubShard {
	return &h.shards[h.hash(name)%shardCount]
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
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	info, err := h.stream.info(ctx)
	if err != nil {
		h.unsubscribeLive(t, nsub)
		fail(err)
		return
	}
	t.start, t.pos, t.mark = info.State.LastSeq, info.State.LastSeq, info.State.LastSeq
	t.nsub = nsub
	h.subscriptions.Inc()
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
		h.subscriptions.Dec()
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
// subscriber, see session.pushFrame): every event of the topic with a stream
// seq up to it has reached this subscriber, so a client that rejoins with
// last_seq = resume_seq misses nothing — not even an event delivered late
// (a gap filled on one job after a later event of another job went out,
// whose stream_seq is lower than one already pushed). stream_seq is not a
// safe resume point; the client de-duplicates the overlap per job by seq.
func (h *hub) decode(m *jetstream.RawStreamMsg) *event {
	head, err := envelope.DecodeEventHead(m.Data)
	if err != nil {
		h.log.Warn("undecodable event in stream", "subject", m.Subject, "stream_seq", m.Sequence, "err", err)
		return nil
	}
	ev := newJobEvent(head, m.Sequence, m.Header.Get(envelope.HeaderTraceparent))
	ev.trace = h.traceOf(m.Header)
	return ev
}

// newJobEvent is the push event of one job event. traceparent is the message's W3C traceparent header ("" when none): its
// trace id goes on the payload as "trace_id", so a job's timeline names the
// trace of every event (docs/design.md#a-jobs-timeline).
func newJobEvent(head envelope.EventHead, streamSeq uint64, traceparent string) *event {
	short := head.Type.Short()
	traceID := telemetry.TraceIDOf(traceparent)
	b := make([]byte, 0, len(head.Data)+96+len(traceID))
	b = append(b, `{"type":`...)
	b = strconv.AppendQuote(b, short)
	b = append(b, `,"job":`...)
	b = append(b, head.Data...)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, head.Seq, 10)
	b = append(b, `,"stream_seq":`...)
	b = strconv.AppendUint(b, streamSeq, 10)
	if traceID != "" {
		b = append(b, `,"trace_id":"`...)
		b = append(b, traceID...)
		b = append(b, '"')
	}
	b = append(b, '}')
	return &event{
		name: "job", payload: b, short: short, jobSeq: head.Seq, streamSeq: streamSeq,
		at: head.Time, terminal: head.Status.Terminal(),
	}
}
