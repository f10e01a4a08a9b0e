package notifier

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/pkg/envelope"
)

// Presence (docs/phoenix-protocol.md#8-presence): who is on a studio: or
// job: topic, per user id, with one meta per connection. Every notifier
// keeps the merged view of all notifiers in memory and pushes Phoenix
// presence_state / presence_diff frames from it. Notifiers exchange their
// own connections on core NATS (beamline.presence.<node>): a diff on every
// change, and a full copy of their entries every heartbeat interval. A
// full copy replaces what the others held for that node, so a lost diff
// heals at the next heartbeat; a node not heard from for 1.5 intervals is
// dropped, its presences leave (docs/design.md#presence-across-notifiers).

// Presence error reasons (join and push replies).
const (
	reasonMetaTooLarge = "presence meta too large"
	reasonBadMeta      = "invalid presence meta"
)

// presEntry is one connection's presence on one topic.
type presEntry struct {
	Topic string          `json:"topic"`
	Key   string          `json:"key"`
	Ref   string          `json:"ref"`
	Meta  json.RawMessage `json:"meta,omitempty"` // the whole meta object, phx_ref included
}

// presMsg is what notifiers publish on beamline.presence.<node>.
type presMsg struct {
	Node  string `json:"node"`
	Start int64  `json:"start"` // the incarnation: unix nanos when the node started
	Seq   uint64 `json:"seq"`   // per incarnation, +1 per message
	Kind  string `json:"kind"`  // hello, diff, sync, bye
	// Sync comes in parts: First starts a copy, Last completes it.
	First bool `json:"first,omitempty"`
	Last  bool `json:"last,omitempty"`
	// Joins (diff, sync) and Leaves (diff: topic, key and ref only).
	Joins  []presEntry `json:"joins,omitempty"`
	Leaves []presEntry `json:"leaves,omitempty"`
}

const (
	presHello    = "hello"
	presKindDiff = "diff"
	presSync     = "sync"
	presBye      = "bye"
	// presMaxMeta bounds a meta object received from another node.
	presMaxMeta = 4096
	// presPartBytes bounds one part of a full copy.
	presPartBytes = 256 << 10
	// presDiffWindow is the least time between two presence_diff frames
	// of one topic: a change within it of the last one waits for the
	// window's end and goes out with the others of the window. A room of
	// M members whose presence changes R times a second then costs at
	// most M/presDiffWindow frames a second instead of M·R.
	presDiffWindow = 20 * time.Millisecond
)

var errPresMsg = errors.New("presence: invalid message")

// decodePresMsg reads and validates a message from another notifier.
func decodePresMsg(b []byte) (presMsg, error) {
	var m presMsg
	if err := json.Unmarshal(b, &m); err != nil {
		return m, errPresMsg
	}
	if envelope.ValidateID("node", m.Node) != nil {
		return m, errPresMsg
	}
	switch m.Kind {
	case presHello, presKindDiff, presSync, presBye:
	default:
		return m, errPresMsg
	}
	for _, l := range [][]presEntry{m.Joins, m.Leaves} {
		for _, e := range l {
			if k, _, reason := parseTopic(e.Topic); reason != "" || !k.hasPresence() {
				return m, errPresMsg
			}
			if envelope.ValidateID("key", e.Key) != nil || e.Ref == "" || len(e.Ref) > 64 {
				return m, errPresMsg
			}
		}
	}
	for _, e := range m.Joins {
		if len(e.Meta) > presMaxMeta || len(e.Meta) < 2 || e.Meta[0] != '{' {
			return m, errPresMsg
		}
	}
	return m, nil
}

// presTopic is the merged presence of one topic, and this notifier's
// subscribers to it.
type presTopic struct {
	keys map[string]map[string]json.RawMessage // key → ref → meta
	subs map[*sub]struct{}
	// The diff fan-out is paced (docs/design.md#presence-diff-pacing):
	// changes within presDiffWindow of the last presence_diff wait in
	// pend and go out together when the window ends (timer).
	pend    *topicDiff
	flushed time.Time
	timer   *time.Timer
}

// presNode is what this notifier holds of another one.
type presNode struct {
	start   int64
	seq     uint64
	seen    time.Time
	entries map[string]presEntry // by ref
	pending map[string]presEntry // a full copy being received (nil: none)
}

// presence tracks presences on this notifier and mirrors the others'.
type presence struct {
	nc       *nats.Conn
	log      *slog.Logger
	node     string
	subject  string // node's own subject, envelope.PresenceSubject(node)
	start    int64
	interval time.Duration
	window   time.Duration // presDiffWindow (tests may change it)
	now      func() time.Time

	mu     sync.Mutex
	seq    uint64
	refN   uint64
	refTag string
	topics map[string]*presTopic
	local  map[*sub]*presEntry
	admins map[*sub]struct{} // admin:presence subscribers
	nodes  map[string]*presNode
	nsub   *nats.Subscription
	// merged counts the refs of every topic's keys (the merged view's
	// presences), kept by joinLocked and leaveLocked: the metric reads it
	// instead of walking 15,000 maps under mu at every gather.
	merged int
}

func newPresence(nc *nats.Conn, log *slog.Logger, node string, interval time.Duration) *presence {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &presence{
		nc: nc, log: log, node: node, subject: envelope.PresenceSubject(node), start: time.Now().UnixNano(), interval: interval, now: time.Now, window: presDiffWindow,
		refTag: hex.EncodeToString(b[:]),
		topics: map[string]*presTopic{}, local: map[*sub]*presEntry{}, nodes: map[string]*presNode{},
		admins: map[*sub]struct{}{},
	}
}

// newNodeName is the default node name: random, so two notifiers never
// share one (a stable name, Config.PresenceNode, lets a restarted notifier
// replace its former self at once).
func newNodeName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "n" + hex.EncodeToString(b[:])
}

// newRefLocked returns a phx_ref unique across notifiers and restarts.
func (p *presence) newRefLocked() string {
	p.refN++
	return p.refTag + "-" + strconv.FormatUint(p.refN, 36)
}

// diffs collects the changes of one operation, per topic.
type diffs map[string]*topicDiff

type topicDiff struct{ joins, leaves map[string][]json.RawMessage }

func (d diffs) of(topic string) *topicDiff {
	pd := d[topic]
	if pd == nil {
		pd = &topicDiff{joins: map[string][]json.RawMessage{}, leaves: map[string][]json.RawMessage{}}
		d[topic] = pd
	}
	return pd
}

func (p *presence) topicLocked(name string) *presTopic {
	t := p.topics[name]
	if t == nil {
		t = &presTopic{keys: map[string]map[string]json.RawMessage{}, subs: map[*sub]struct{}{}}
		p.topics[name] = t
	}
	return t
}

// joinLocked adds e to the merged view.
func (p *presence) joinLocked(d diffs, e presEntry) {
	t := p.topicLocked(e.Topic)
	refs := t.keys[e.Key]
	if refs == nil {
		refs = map[string]json.RawMessage{}
		t.keys[e.Key] = refs
	}
	if _, had := refs[e.Ref]; !had {
		p.merged++
	}
	refs[e.Ref] = e.Meta
	pd := d.of(e.Topic)
	pd.joins[e.Key] = append(pd.joins[e.Key], e.Meta)
}

// leaveLocked removes e (by topic, key, ref) from the merged view.
func (p *presence) leaveLocked(d diffs, e presEntry) {
	t := p.topics[e.Topic]
	if t == nil {
		return
	}
	meta, ok := t.keys[e.Key][e.Ref]
	if !ok {
		return
	}
	delete(t.keys[e.Key], e.Ref)
	p.merged--
	if len(t.keys[e.Key]) == 0 {
		delete(t.keys, e.Key)
	}
	pd := d.of(e.Topic)
	pd.leaves[e.Key] = append(pd.leaves[e.Key], meta)
}

// flushLocked pushes every topic's diff to its subscribers here (and all
// of them, each meta with its topic, to admin:presence) and forgets topics
// nobody is on any more.
func (p *presence) flushLocked(d diffs) {
	if len(p.admins) > 0 && len(d) > 0 {
		all := &topicDiff{joins: map[string][]json.RawMessage{}, leaves: map[string][]json.RawMessage{}}
		for name, pd := range d {
			for k, l := range pd.joins {
				for _, m := range l {
					all.joins[k] = append(all.joins[k], withTopic(name, m))
				}
			}
			for k, l := range pd.leaves {
				for _, m := range l {
					all.leaves[k] = append(all.leaves[k], withTopic(name, m))
				}
			}
		}
		b := append([]byte(`{"joins":`), appendPresences(nil, all.joins)...)
		b = append(append(b, `,"leaves":`...), appendPresences(nil, all.leaves)...)
		ev := &event{name: "presence_diff", payload: append(b, '}')}
		for sb := range p.admins {
			sb.sink.deliver(sb, ev)
		}
	}
	now := time.Now()
	for name, pd := range d {
		t := p.topics[name]
		if t == nil {
			continue
		}
		if len(t.subs) > 0 {
			p.queueDiffLocked(t, pd, now)
		}
		if len(t.keys) == 0 && len(t.subs) == 0 {
			delete(p.topics, name)
		}
	}
}

// appendPresences encodes {key: {"metas": [meta, …]}, …}.
func appendPresences(b []byte, m map[string][]json.RawMessage) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, k)
		b = append(b, `:{"metas":[`...)
		for j, meta := range m[k] {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, meta...)
		}
		b = append(b, "]}"...)
	}
	return append(b, '}')
}

// stateLocked encodes the topic's presence_state payload, as
// appendPresences would, straight from the topic's keys: every join of a
// big room encodes it, under the presence lock. Each key's refs are read
// once (into one flat slice of metas), not once to size the buffer and
// again to encode: iterating a key's small map costs more than copying
// its meta, and a storm's joins each encode the whole room.
func (t *presTopic) stateLocked() []byte {
	type keyMetas struct {
		key        string
		start, end int // its metas in metas
	}
	keys := make([]keyMetas, 0, len(t.keys))
	metas := make([]json.RawMessage, 0, len(t.keys))
	size := 2
	for k, refs := range t.keys {
		start := len(metas)
		size += len(k) + 16
		for _, meta := range refs {
			metas = append(metas, meta)
			size += len(meta) + 1
		}
		keys = append(keys, keyMetas{key: k, start: start, end: len(metas)})
	}
	slices.SortFunc(keys, func(a, b keyMetas) int { return strings.Compare(a.key, b.key) })
	b := make([]byte, 0, size)
	b = append(b, '{')
	for i, km := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, km.key)
		b = append(b, `:{"metas":[`...)
		l := metas[km.start:km.end]
		if len(l) > 1 {
			slices.SortFunc(l, func(a, b json.RawMessage) int { return bytes.Compare(a, b) })
		}
		for j, meta := range l {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, meta...)
		}
		b = append(b, "]}"...)
	}
	return append(b, '}')
}

// withTopic adds "topic" to a meta object: {"topic":…,"phx_ref":…}.
func withTopic(topic string, meta json.RawMessage) json.RawMessage {
	b := append([]byte(`{"topic":`), strconv.Quote(topic)...)
	if len(meta) > 2 {
		b = append(b, ',')
	}
	return append(b, meta[1:]...)
}

// watchAll subscribes an admin:presence subscriber and returns its
// presence_state: every presence of every topic.
func (p *presence) watchAll(sb *sub) *event {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.admins[sb] = struct{}{}
	m := map[string][]json.RawMessage{}
	for name, t := range p.topics {
		for k, refs := range t.keys {
			for _, meta := range refs {
				m[k] = append(m[k], withTopic(name, meta))
			}
		}
	}
	for _, l := range m {
		slices.SortFunc(l, func(a, b json.RawMessage) int { return bytes.Compare(a, b) })
	}
	return &event{name: "presence_state", payload: appendPresences(nil, m)}
}

// makeMeta builds a connection's meta object: phx_ref, online_at (unix
// ms), device, the client's meta, and phx_ref_prev after an update.
func makeMeta(ref, prev string, onlineAt int64, device string, client json.RawMessage) json.RawMessage {
	b := append([]byte(`{"phx_ref":`), strconv.Quote(ref)...)
	if prev != "" {
		b = append(b, `,"phx_ref_prev":`...)
		b = strconv.AppendQuote(b, prev)
	}
	b = append(b, `,"online_at":`...)
	b = strconv.AppendInt(b, onlineAt, 10)
	b = append(b, `,"device":`...)
	b = strconv.AppendQuote(b, device)
	if len(client) > 0 {
		b = append(b, `,"meta":`...)
		b = append(b, client...)
	}
	return append(b, '}')
}

// localConn is what a tracked connection contributes to its metas.
type localConn struct {
	onlineAt int64
	device   string
}

// track adds sb's connection (user key) to sb's topic and, when listen is
// set, subscribes sb to the topic's diffs and returns the presence_state
// event, which includes the connection itself; the connection's own join
// also follows as a diff, as on Phoenix. sb is still replaying: diffs wait
// behind the join.
func (p *presence) track(sb *sub, key string, lc localConn, client json.RawMessage, listen bool) *event {
	p.mu.Lock()
	defer p.mu.Unlock()
	ref := p.newRefLocked()
	e := &presEntry{Topic: sb.topic, Key: key, Ref: ref, Meta: makeMeta(ref, "", lc.onlineAt, lc.device, client)}
	p.local[sb] = e
	t := p.topicLocked(sb.topic)
	if listen {
		t.subs[sb] = struct{}{}
	}
	d := diffs{}
	p.joinLocked(d, *e)
	var state *event
	if listen {
		state = &event{name: "presence_state", payload: t.stateLocked()}
	}
	p.flushLocked(d)
	p.publishLocked(presMsg{Kind: presKindDiff, Joins: []presEntry{*e}})
	return state
}

// update replaces the client meta of sb's connection: a leave of the old
// meta and a join of the new one (with phx_ref_prev), in one diff.
func (p *presence) update(sb *sub, lc localConn, client json.RawMessage) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.local[sb]
	if old == nil {
		return false
	}
	ref := p.newRefLocked()
	e := &presEntry{Topic: old.Topic, Key: old.Key, Ref: ref, Meta: makeMeta(ref, old.Ref, lc.onlineAt, lc.device, client)}
	p.local[sb] = e
	d := diffs{}
	p.joinLocked(d, *e)
	p.leaveLocked(d, *old)
	p.flushLocked(d)
	p.publishLocked(presMsg{Kind: presKindDiff, Joins: []presEntry{*e}, Leaves: []presEntry{{Topic: old.Topic, Key: old.Key, Ref: old.Ref}}})
	return true
}

// untrack removes sb's connection and subscription; a no-op when sb was
// not tracked.
func (p *presence) untrack(sb *sub) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.admins, sb)
	e := p.local[sb]
	if e == nil {
		return
	}
	delete(p.local, sb)
	if t := p.topics[e.Topic]; t != nil {
		p.unsubLocked(t, sb)
	}
	d := diffs{}
	p.leaveLocked(d, *e)
	p.flushLocked(d)
	p.publishLocked(presMsg{Kind: presKindDiff, Leaves: []presEntry{{Topic: e.Topic, Key: e.Key, Ref: e.Ref}}})
}

// publishLocked stamps m and publishes it (core NATS: buffered, never
// blocks). A failure is healed by the next heartbeat.
func (p *presence) publishLocked(m presMsg) {
	p.seq++
	m.Node, m.Start, m.Seq = p.node, p.start, p.seq
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	if err := p.nc.Publish(p.subject, b); err != nil {
		p.log.Debug("presence: publish failed; the next heartbeat heals it", "err", err)
	}
}

// publishSyncLocked publishes the full copy of this node's entries, in
// parts of at most presPartBytes.
func (p *presence) publishSyncLocked() {
	m := presMsg{Kind: presSync, First: true}
	size := 0
	for _, e := range p.local {
		if size > presPartBytes {
			p.publishLocked(m)
			m, size = presMsg{Kind: presSync}, 0
		}
		m.Joins = append(m.Joins, *e)
		size += len(e.Meta) + len(e.Topic) + len(e.Key) + len(e.Ref) + 40
	}
	m.Last = true
	p.publishLocked(m)
}

// receive applies a message from another notifier.
func (p *presence) receive(msg *nats.Msg) {
	if msg.Subject == p.subject {
		// Ours (the wildcard delivers them back), or a former
		// incarnation's: ignored below anyway, so not decoded. A
		// heartbeat is the full copy of this node's presences, which it
		// decoded every interval for nothing (BENCHMARKS.md Run V).
		return
	}
	m, err := decodePresMsg(msg.Data)
	if err != nil {
		p.log.Warn("presence: dropping an invalid message", "subject", msg.Subject, "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.Node == p.node {
		return // ours, or a former incarnation's: this one is the live one
	}
	d := diffs{}
	defer p.flushLocked(d)
	n := p.nodes[m.Node]
	switch {
	case n != nil && m.Start < n.start:
		return // a former incarnation's late message
	case n != nil && m.Start > n.start:
		// The node restarted: its former presences leave now, not when
		// they would expire.
		p.dropNodeLocked(d, m.Node)
		n = nil
	}
	if n == nil {
		n = &presNode{start: m.Start, seq: m.Seq - 1, entries: map[string]presEntry{}}
		p.nodes[m.Node] = n
	}
	n.seen = p.now()
	if m.Seq != n.seq+1 {
		n.pending = nil // a lost part: wait for the next full copy
	}
	n.seq = m.Seq
	switch m.Kind {
	case presHello:
		p.publishSyncLocked() // so it need not wait a heartbeat for ours
	case presBye:
		p.dropNodeLocked(d, m.Node)
	case presKindDiff:
		for _, e := range m.Joins {
			n.entries[e.Ref] = e
			p.joinLocked(d, e)
		}
		for _, e := range m.Leaves {
			if _, ok := n.entries[e.Ref]; ok {
				delete(n.entries, e.Ref)
				p.leaveLocked(d, e)
			}
		}
	case presSync:
		if m.First {
			n.pending = map[string]presEntry{}
		}
		if n.pending == nil {
			return
		}
		for _, e := range m.Joins {
			n.pending[e.Ref] = e
		}
		if !m.Last {
			return
		}
		for ref, e := range n.entries {
			if _, ok := n.pending[ref]; !ok {
				p.leaveLocked(d, e)
			}
		}
		for ref, e := range n.pending {
			if _, ok := n.entries[ref]; !ok {
				p.joinLocked(d, e)
			}
		}
		n.entries, n.pending = n.pending, nil
	}
}

// dropNodeLocked makes every presence of node leave.
func (p *presence) dropNodeLocked(d diffs, node string) {
	n := p.nodes[node]
	if n == nil {
		return
	}
	delete(p.nodes, node)
	for _, e := range n.entries {
		p.leaveLocked(d, e)
	}
}

// expire drops the nodes not heard from for 1.5 heartbeat intervals.
func (p *presence) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := diffs{}
	cut := p.now().Add(-p.interval * 3 / 2)
	for name, n := range p.nodes {
		if n.seen.Before(cut) {
			p.log.Info("presence: a notifier went silent; its presences leave", "node", name, "entries", len(n.entries))
			p.dropNodeLocked(d, name)
		}
	}
	p.flushLocked(d)
}

// start subscribes to the other notifiers and says hello (they answer with
// their full copies).
func (p *presence) startSync() error {
	sub, err := p.nc.Subscribe(envelope.PresenceFilter, p.receive)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.nsub = sub
	p.publishLocked(presMsg{Kind: presHello})
	p.publishSyncLocked()
	p.mu.Unlock()
	return nil
}

// loop sends the heartbeat (a full copy) every interval and expires silent
// nodes, until done is closed.
func (p *presence) loop(done <-chan struct{}) {
	beat := time.NewTicker(p.interval)
	defer beat.Stop()
	check := time.NewTicker(p.interval / 8)
	defer check.Stop()
	for {
		select {
		case <-done:
			return
		case <-beat.C:
			p.mu.Lock()
			p.publishSyncLocked()
			p.mu.Unlock()
		case <-check.C:
			p.expire()
		}
	}
}

// stop says goodbye (the others drop this node's presences at once) and
// unsubscribes.
func (p *presence) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.nsub == nil {
		return
	}
	p.publishLocked(presMsg{Kind: presBye})
	for _, t := range p.topics {
		p.stopDiffTimerLocked(t) // its subscribers are gone with the notifier
	}
	_ = p.nsub.Unsubscribe()
	p.nsub = nil
	_ = p.nc.Flush()
}

// PresenceEntry is one connection present on a topic (Service.Presences).
type PresenceEntry struct {
	Topic string          `json:"topic"`
	User  string          `json:"user"`
	Meta  json.RawMessage `json:"meta"`
}

// list returns every presence this notifier knows of, on every notifier.
func (p *presence) list() []PresenceEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []PresenceEntry
	for name, t := range p.topics {
		for key, refs := range t.keys {
			for _, meta := range refs {
				out = append(out, PresenceEntry{Topic: name, User: key, Meta: meta})
			}
		}
	}
	return out
}

// startPresence subscribes to the other notifiers' presence and to the
// studio rooms' messages, and starts the heartbeat; the function returned
// says goodbye and stops them.
func (s *Service) startPresence() (stop func(), err error) {
	if err := s.presence.startSync(); err != nil {
		return nil, fmt.Errorf("notifier: presence: %w", err)
	}
	ssub, err := s.nc.Subscribe(envelope.StudioFilter, s.onStudio)
	if err != nil {
		s.presence.stop()
		return nil, fmt.Errorf("notifier: studio: %w", err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.presence.loop(done)
	}()
	return func() {
		close(done)
		wg.Wait()
		_ = ssub.Unsubscribe()
		s.presence.stop()
	}, nil
}

// registerPresenceMetrics exports the presences this notifier holds:
// beamline_notifier_presences{scope="local"|"all"} and the other
// notifiers it hears, beamline_notifier_presence_peers.
func registerPresenceMetrics(reg prometheus.Registerer, p *presence) error {
	if reg == nil {
		return nil
	}
	count := func(all bool) float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !all {
			return float64(len(p.local))
		}
		return float64(p.merged)
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "beamline_notifier_presences", Help: "Presences (connections on studio: and job: topics): this notifier's own.",
			ConstLabels: prometheus.Labels{"scope": "local"},
		}, func() float64 { return count(false) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "beamline_notifier_presences", Help: "Presences (connections on studio: and job: topics): this notifier's own.",
			ConstLabels: prometheus.Labels{"scope": "all"},
		}, func() float64 { return count(true) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "beamline_notifier_presence_peers", Help: "Other notifiers whose presences this one holds.",
		}, func() float64 {
			p.mu.Lock()
			defer p.mu.Unlock()
			return float64(len(p.nodes))
		}),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
