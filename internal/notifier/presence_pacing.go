package notifier

import (
	"encoding/json"
	"time"
)

// Pacing of the presence_diff fan-out per topic
// (docs/design.md#presence-diff-pacing): at most one presence_diff per
// topic per presDiffWindow on this notifier, the changes in between merged.

// queueDiffLocked adds pd to t's next presence_diff and sends it now, or
// at the end of the window when one went out less than presDiffWindow
// ago. Merged changes keep their order where it matters: a diff applies
// its joins before its leaves, so a connection that joined and left
// within one window is in both and ends up absent, and an update's new
// meta joins while its old one leaves.
//
// A phx_ref may join again after it left: a peer notifier dropped
// for missed heartbeats (expire) comes back with the same refs. Merged
// with the leave still pending, that join would be applied first and the
// leave would then remove it for good; so a join of a key with a leave
// pending sends the pending diff at once, and the join goes in the next.
func (p *presence) queueDiffLocked(t *presTopic, pd *topicDiff, now time.Time) {
	if t.pend != nil {
		for k := range pd.joins {
			if len(t.pend.leaves[k]) > 0 {
				p.stopDiffTimerLocked(t)
				p.sendDiffLocked(t, now)
				break
			}
		}
	}
	if t.pend == nil {
		t.pend = &topicDiff{joins: map[string][]json.RawMessage{}, leaves: map[string][]json.RawMessage{}}
	}
	for k, l := range pd.joins {
		t.pend.joins[k] = append(t.pend.joins[k], l...)
	}
	for k, l := range pd.leaves {
		t.pend.leaves[k] = append(t.pend.leaves[k], l...)
	}
	if t.timer != nil {
		return // the window's end sends it
	}
	if wait := t.flushed.Add(p.window).Sub(now); wait > 0 {
		t.timer = time.AfterFunc(wait, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.timer = nil
			p.sendDiffLocked(t, time.Now())
		})
		return
	}
	p.sendDiffLocked(t, now)
}

// unsubLocked removes sb from t's subscribers here. Changes are queued
// only while t has some, so once the last one is gone what is pending is
// dropped: sent to a later subscriber it would lack the changes made
// meanwhile and undo what that subscriber's presence_state has right.
func (p *presence) unsubLocked(t *presTopic, sb *sub) {
	delete(t.subs, sb)
	if len(t.subs) == 0 {
		p.stopDiffTimerLocked(t)
		t.pend = nil
	}
}

// stopDiffTimerLocked stops the timer of t's pending diff, if any. A timer
// that already fired waits for p.mu and then finds nothing pending.
func (p *presence) stopDiffTimerLocked(t *presTopic) {
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
}

// sendDiffLocked pushes t's pending diff to its subscribers here. Those
// that subscribed after a change of it was made have it in their
// presence_state already; the client applies a join it has and a leave
// of what it lacks as no-ops (as it does its own join on Phoenix).
func (p *presence) sendDiffLocked(t *presTopic, now time.Time) {
	pd := t.pend
	t.pend = nil
	if pd == nil || len(t.subs) == 0 {
		return
	}
	t.flushed = now
	b := make([]byte, 0, 128)
	b = append(b, `{"joins":`...)
	b = appendPresences(b, pd.joins)
	b = append(b, `,"leaves":`...)
	b = appendPresences(b, pd.leaves)
	b = append(b, '}')
	ev := &event{name: "presence_diff", payload: b}
	for sb := range t.subs {
		sb.sink.deliver(sb, ev)
	}
}
