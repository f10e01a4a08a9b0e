package notifier

import (
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordSink keeps the presence_diff payloads delivered to a subscriber.
type recordSink struct {
	mu     sync.Mutex
	frames []presDiffT
}

func (r *recordSink) deliver(_ *sub, ev *event) {
	var f presDiffT
	if err := json.Unmarshal(ev.payload, &f); err != nil {
		panic(err)
	}
	r.mu.Lock()
	r.frames = append(r.frames, f)
	r.mu.Unlock()
}

func (r *recordSink) end(*sub, string, []byte) {}

func (r *recordSink) got() []presDiffT {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.frames)
}

// view applies the frames received, in order, as phoenix.js does
// (applyDiff): the refs present per key.
func (r *recordSink) view() map[string][]string {
	v := map[string][]string{}
	for _, f := range r.got() {
		applyDiff(v, f)
	}
	return v
}

func presenceChange(join bool, key, ref string) *topicDiff {
	d := &topicDiff{joins: map[string][]json.RawMessage{}, leaves: map[string][]json.RawMessage{}}
	m := json.RawMessage(`{"phx_ref":"` + ref + `"}`)
	if join {
		d.joins[key] = []json.RawMessage{m}
	} else {
		d.leaves[key] = []json.RawMessage{m}
	}
	return d
}

func pacedTopic(t *testing.T, window time.Duration) (*presence, *presTopic) {
	t.Helper()
	p := newPresence(nil, slog.New(slog.DiscardHandler), "n1", time.Second)
	p.window = window
	tp := &presTopic{keys: map[string]map[string]json.RawMessage{}, subs: map[*sub]struct{}{}}
	t.Cleanup(func() {
		p.mu.Lock()
		p.stopDiffTimerLocked(tp)
		p.mu.Unlock()
	})
	return p, tp
}

// TestPresenceDiffRejoinWithinWindow: a ref that leaves and joins again
// within one window (a peer notifier expired for missed heartbeats and
// back with the same refs) ends up present: merged into one diff, the
// client would apply the join before the leave and drop it for good.
func TestPresenceDiffRejoinWithinWindow(t *testing.T) {
	const window = 200 * time.Millisecond
	p, tp := pacedTopic(t, window)
	rec := &recordSink{}
	tp.subs[&sub{sink: rec}] = struct{}{}

	p.mu.Lock()
	p.queueDiffLocked(tp, presenceChange(true, "x", "r1"), time.Now()) // sent at once
	p.queueDiffLocked(tp, presenceChange(false, "x", "r1"), time.Now())
	p.queueDiffLocked(tp, presenceChange(true, "x", "r1"), time.Now())
	p.mu.Unlock()

	deadline := time.Now().Add(5 * time.Second)
	for len(rec.view()["x"]) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * window) // anything still pending goes out
	if v := rec.view(); !slices.Equal(v["x"], []string{"r1"}) {
		t.Fatalf("after join, leave, join of x/r1 the member sees %v (frames %+v), want x present with r1", v, rec.got())
	}
}

// TestPresenceDiffDroppedWithLastSubscriber: a diff pending when the
// topic's last subscriber here leaves is not sent to one that subscribes
// later: the changes made meanwhile were not queued, and the stale diff
// would undo its presence_state.
func TestPresenceDiffDroppedWithLastSubscriber(t *testing.T) {
	const window = 200 * time.Millisecond
	p, tp := pacedTopic(t, window)
	first := &sub{sink: &recordSink{}}
	tp.subs[first] = struct{}{}

	p.mu.Lock()
	p.queueDiffLocked(tp, presenceChange(true, "x", "r1"), time.Now()) // sent at once
	p.queueDiffLocked(tp, presenceChange(true, "y", "r2"), time.Now()) // pending
	p.unsubLocked(tp, first)
	// y leaves while nobody here subscribes (not queued), then a new
	// subscriber joins with a presence_state that lacks y.
	later := &recordSink{}
	tp.subs[&sub{sink: later}] = struct{}{}
	p.mu.Unlock()

	time.Sleep(3 * window)
	if f := later.got(); len(f) != 0 {
		t.Fatalf("the later subscriber got %+v, want no diff from before it subscribed", f)
	}
}
