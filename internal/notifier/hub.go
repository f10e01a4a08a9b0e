package notifier

import (
	"context"
	"errors"
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
}

// sink is where a subscription's events go: a WebSocket connection or an
// SSE stream. deliver must not block.
type sink interface {
	deliver(sb *sub, ev *event)
}

// sub is one (connection, topic) subscription. The fields below sink are
// guarded by the sink's own lock.
type sub struct {
	topic   string
	kind    topicKind
	joinRef phoenix.Ref
	sink    sink

	last      uint64   // highest key delivered (job seq, or stream seq for user topics)
	replaying bool     // join in progress: live events wait in pending
	pending   []*event // live events that arrived during the join
	closed    bool
}

// key is what a subscription de-duplicates and orders by.
func (sb *sub) key(ev *event) uint64 {
	if sb.kind == kindUser {
		return ev.streamSeq
	}
	return ev.jobSeq
}

// fresh reports whether ev is new for sb, and records it. Events without
// sequences (broadcasts) are always fresh.
func (sb *sub) fresh(ev *event) bool {
	k := sb.key(ev)
	if k == 0 {
		return true
	}
	if k <= sb.last {
		return false
	}
	sb.last = k
	return true
}

const shardCount = 64

// hub maps topics to their subscribers, sharded so that fan-out on one topic
// does not contend with joins on another.
type hub struct {
	s      *Service
	seed   maphash.Seed
	shards [shardCount]hubShard
}

type hubShard struct {
	mu     sync.RWMutex
	topics map[string]*topic
}

// topic is one joined topic on this notifier: its subscribers and, for
// stream-fed topics, the core NATS subscription and the reader goroutine.
type topic struct {
	name    string
	subject string // "" for server-local topics (admin:metrics)
	subs    map[*sub]struct{}
	list    atomic.Pointer[[]*sub]

	ready chan struct{} // closed once started (err set on failure)
	err   error
	nsub  *nats.Subscription
	ring  chan struct{}
	stop  chan struct{}

	mu    sync.Mutex
	wants map[string]uint64 // subject → highest job seq rung
	seen  map[string]uint64 // subject → highest job seq fetched
}

func newHub(s *Service) *hub {
	h := &hub{s: s, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].topics = map[string]*topic{}
	}
	return h
}

func (h *hub) shard(name string) *hubShard {
	return &h.shards[maphash.String(h.seed, name)%shardCount]
}

func (t *topic) refresh() {
	l := make([]*sub, 0, len(t.subs))
	for sb := range t.subs {
		l = append(l, sb)
	}
	t.list.Store(&l)
}

// add subscribes sb to its topic, creating the topic (and its NATS
// subscription on subject) when sb is the first. It returns once the topic
// is live: from then on every event stored after the topic's start position
// reaches sb.
func (h *hub) add(sb *sub, subject string) error {
	sh := h.shard(sb.topic)
	sh.mu.Lock()
	t := sh.topics[sb.topic]
	created := t == nil
	if created {
		t = &topic{
			name: sb.topic, subject: subject, subs: map[*sub]struct{}{},
			ready: make(chan struct{}), ring: make(chan struct{}, 1), stop: make(chan struct{}),
			wants: map[string]uint64{}, seen: map[string]uint64{},
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
	return nil
}

func (h *hub) start(t *topic) {
	defer close(t.ready)
	if t.subject == "" {
		return
	}
	fail := func(err error) {
		t.err = err
		sh := h.shard(t.name)
		sh.mu.Lock()
		if sh.topics[t.name] == t {
			delete(sh.topics, t.name)
		}
		sh.mu.Unlock()
	}
	// Subscribe first, then read the stream's position: whatever is stored
	// after that position rings the doorbell and is fetched.
	nsub, err := h.s.nc.Subscribe(t.subject, t.doorbell)
	if err != nil {
		fail(err)
		return
	}
	ctx, cancel := context.WithTimeout(h.s.ctx, 5*time.Second)
	defer cancel()
	info, err := h.s.events.Info(ctx)
	if err != nil {
		_ = nsub.Unsubscribe()
		fail(err)
		return
	}
	t.nsub = nsub
	h.s.m.subscriptions.Inc()
	h.s.wg.Add(1)
	go h.run(t, info.State.LastSeq)
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
	if !last {
		return
	}
	<-t.ready
	if t.err == nil && t.nsub != nil {
		close(t.stop)
		_ = t.nsub.Unsubscribe()
		h.s.m.subscriptions.Dec()
	}
}

// dispatch hands ev to every subscriber of the topic on this notifier.
func (h *hub) dispatch(name string, ev *event) {
	sh := h.shard(name)
	sh.mu.RLock()
	t := sh.topics[name]
	sh.mu.RUnlock()
	if t == nil {
		return
	}
	if l := t.list.Load(); l != nil {
		for _, sb := range *l {
			sb.sink.deliver(sb, ev)
		}
	}
}

// ringAll makes every stream-fed topic re-read the stream (after a NATS
// reconnect).
func (h *hub) ringAll() {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, t := range sh.topics {
			if t.subject != "" {
				t.rang()
			}
		}
		sh.mu.RUnlock()
	}
}

// doorbell runs on the NATS subscription: it notes which job seq was
// announced and wakes the reader. The message itself is not pushed: the
// stream copy carries the stream sequence and the order clients resume by.
func (t *topic) doorbell(m *nats.Msg) {
	if seq, ok := envelope.SeqOf(m.Header); ok {
		t.mu.Lock()
		if seq > t.wants[m.Subject] {
			t.wants[m.Subject] = seq
		}
		t.mu.Unlock()
	}
	t.rang()
}

func (t *topic) rang() {
	select {
	case t.ring <- struct{}{}:
	default:
	}
}

// run is the topic's reader: on every ring it fetches what the stream holds
// after pos and dispatches it in stream order.
func (h *hub) run(t *topic, pos uint64) {
	defer h.s.wg.Done()
	for {
		select {
		case <-t.stop:
			return
		case <-h.s.ctx.Done():
			return
		case <-t.ring:
		}
		pos = h.drain(t, pos)
	}
}

// maxWaitRounds bounds how long a doorbell waits for its message to show up
// in the stream (a publish the stream refused never does).
const maxWaitRounds = 12

func (h *hub) drain(t *topic, pos uint64) uint64 {
	backoff := time.Millisecond
	for rounds := 0; ; {
		ctx, cancel := context.WithTimeout(h.s.ctx, 5*time.Second)
		msg, err := h.s.events.GetMsg(ctx, pos+1, jetstream.WithGetMsgSubject(t.subject))
		cancel()
		switch {
		case err == nil:
			pos = msg.Sequence
			if ev := h.decode(msg); ev != nil {
				t.mu.Lock()
				if ev.jobSeq > t.seen[msg.Subject] {
					t.seen[msg.Subject] = ev.jobSeq
				}
				t.mu.Unlock()
				h.dispatch(t.name, ev)
			}
			backoff = time.Millisecond
			continue
		case errors.Is(err, jetstream.ErrMsgNotFound):
			if h.wantsMet(t, pos) {
				return pos
			}
			rounds++
			if rounds > maxWaitRounds {
				h.s.log.Warn("announced event never appeared in the stream", "topic", t.name)
				t.mu.Lock()
				clear(t.wants)
				clear(t.seen)
				t.mu.Unlock()
				return pos
			}
		default:
			if h.s.ctx.Err() != nil {
				return pos
			}
			h.s.log.Warn("reading events stream", "topic", t.name, "err", err)
		}
		select {
		case <-t.stop:
			return pos
		case <-h.s.ctx.Done():
			return pos
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// wantsMet reports whether every announced event has been fetched, or was
// stored before pos (announced late, or a duplicate publish).
func (h *hub) wantsMet(t *topic, pos uint64) bool {
	t.mu.Lock()
	pending := map[string]uint64{}
	for subj, want := range t.wants {
		if t.seen[subj] < want {
			pending[subj] = want
		}
	}
	t.mu.Unlock()
	for subj, want := range pending {
		ctx, cancel := context.WithTimeout(h.s.ctx, 5*time.Second)
		m, err := h.s.events.GetLastMsgForSubject(ctx, subj)
		cancel()
		if err != nil {
			continue
		}
		if seq, ok := envelope.SeqOf(m.Header); ok && seq >= want && m.Sequence <= pos {
			delete(pending, subj)
		}
	}
	if len(pending) > 0 {
		return false
	}
	t.mu.Lock()
	clear(t.wants)
	clear(t.seen)
	t.mu.Unlock()
	return true
}

// decode turns a stream message into a push event:
// {"type":"<short>","job":<snapshot>,"seq":<job seq>,"stream_seq":<stream seq>}.
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
