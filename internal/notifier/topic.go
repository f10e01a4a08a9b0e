package notifier

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/pkg/envelope"
)

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

func (t *topic) refresh() {
	l := make([]*sub, 0, len(t.subs))
	for sb := range t.subs {
		l = append(l, sb)
	}
	t.list.Store(&l)
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

// topicKind is what a topic carries.
type topicKind int

const (
	kindUnknown topicKind = iota
	kindJob               // job:<id>: one job, owner or admin
	kindUser              // user:<id>: all of one user's jobs, that user or admin
	kindAdmin             // admin:metrics: live pipeline figures, admin only
	kindStudio            // studio:<room>: people working together, the token's rooms
)

// hasPresence reports whether the topic kind tracks presence.
func (k topicKind) hasPresence() bool { return k == kindJob || k == kindStudio }

// AdminMetricsTopic is the server-fed topic for admin dashboards (see
// Service.Broadcast).
const AdminMetricsTopic = "admin:metrics"

// AdminPresenceTopic shows admins every presence on every topic, as
// Phoenix presence keyed by user, each meta with its "topic".
const AdminPresenceTopic = "admin:presence"

func (k topicKind) String() string {
	switch k {
	case kindJob:
		return "job"
	case kindUser:
		return "user"
	case kindAdmin:
		return "admin"
	case kindStudio:
		return "studio"
	}
	return "unknown"
}

// parseTopic splits a topic; reason is a join error reason when it is not
// one we serve.
func parseTopic(t string) (kind topicKind, id, reason string) {
	if t == AdminMetricsTopic || t == AdminPresenceTopic {
		return kindAdmin, "", ""
	}
	prefix, id, ok := strings.Cut(t, ":")
	switch {
	case ok && prefix == "job":
		kind = kindJob
	case ok && prefix == "user":
		kind = kindUser
	case ok && prefix == "studio":
		if strings.ContainsAny(id, ".*>") {
			return kindStudio, "", reasonBadRoom
		}
		kind = kindStudio
	default:
		return kindUnknown, "", reasonUnmatched
	}
	if envelope.ValidateID("topic", id) != nil {
		return kind, "", reasonInvalid
	}
	return kind, id, ""
}
