package notifier

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// applyDiff applies a presence_diff as phoenix.js Presence.syncDiff does:
// joins first (metas merged by phx_ref), then leaves removed by phx_ref,
// and a key whose metas run out dropped.
func applyDiff(st map[string][]string, d presDiffT) {
	for key, p := range d.Joins {
		for _, m := range p.Metas {
			if !slices.Contains(st[key], m.Ref) {
				st[key] = append(st[key], m.Ref)
			}
		}
	}
	for key, p := range d.Leaves {
		for _, m := range p.Metas {
			st[key] = slices.DeleteFunc(st[key], func(r string) bool { return r == m.Ref })
		}
		if len(st[key]) == 0 {
			delete(st, key)
		}
	}
}

// A burst of presence changes reaches a member in fewer presence_diff
// frames than changes (docs/design.md#presence-diff-pacing), the member's
// view ends up right (a connection that joined and left within one window
// is absent), and a change after a quiet spell goes out at once.
func TestPresenceDiffPacing(t *testing.T) {
	const window = time.Second
	w := newWorld(t)
	a := startNotifier(t, w, Config{})
	b := startNotifier(t, w, Config{})
	for _, r := range []*running{a, b} {
		r.svc.presence.mu.Lock()
		r.svc.presence.window = window
		r.svc.presence.mu.Unlock()
	}
	member := dial(t, a, roomToken(t, "member", "lab"))
	view := map[string][]string{}
	for key, p := range member.joinPresence("studio:lab", nil) {
		for _, m := range p.Metas {
			view[key] = append(view[key], m.Ref)
		}
	}
	applyDiff(view, member.presenceDiff("studio:lab")) // its own join

	// Ten changes at once, on both notifiers: eight joins, and one
	// connection that joins and leaves.
	var want []string
	for i := range 8 {
		r := a
		if i%2 == 1 {
			r = b
		}
		user := fmt.Sprintf("u%d", i)
		c := dial(t, r, roomToken(t, user, "lab"))
		ref := c.nextRef()
		c.send(&ref, ref, "studio:lab", "phx_join", map[string]any{})
		want = append(want, user)
	}
	flicker := dial(t, b, roomToken(t, "flicker", "lab"))
	ref := flicker.nextRef()
	flicker.send(&ref, ref, "studio:lab", "phx_join", map[string]any{})
	flicker.reply(ref)
	leave := flicker.nextRef()
	flicker.send(&ref, leave, "studio:lab", "phx_leave", map[string]any{})
	want = append(want, "member")
	slices.Sort(want)

	frames := 0
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(keysOfView(view), want) || frames == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d diffs the member sees %v, want %v", frames, keysOfView(view), want)
		}
		applyDiff(view, member.presenceDiff("studio:lab"))
		frames++
	}
	if frames > 4 {
		t.Errorf("10 changes within a second reached the member in %d presence_diff frames, want them paced (≤ 4)", frames)
	}
	member.quiet("studio:lab", 200*time.Millisecond)

	// After a quiet window, a change is not held back.
	time.Sleep(window + 100*time.Millisecond)
	late := dial(t, b, roomToken(t, "late", "lab"))
	start := time.Now()
	ref = late.nextRef()
	late.send(&ref, ref, "studio:lab", "phx_join", map[string]any{})
	d := member.presenceDiff("studio:lab")
	if took := time.Since(start); took > window/2 {
		t.Errorf("a join after a quiet second reached the member after %v, want it sent at once", took)
	}
	if len(d.Joins["late"].Metas) != 1 {
		b, _ := json.Marshal(d)
		t.Errorf("diff after the quiet spell: %s, want late's join", b)
	}
}

func keysOfView(v map[string][]string) []string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// presence_state, encoded straight from the topic, is what appendPresences
// makes of the same presences (each key's metas sorted), and valid JSON.
func TestPresenceStateEncoding(t *testing.T) {
	tp := &presTopic{keys: map[string]map[string]json.RawMessage{}}
	want := map[string][]json.RawMessage{}
	for i := range 50 {
		key := fmt.Sprintf("user\"%d", i%17) // several metas per key, a key to quote
		ref := fmt.Sprintf("r%d", 100-i)
		meta := makeMeta(ref, "", int64(i), "d", json.RawMessage(`{"n":1}`))
		if tp.keys[key] == nil {
			tp.keys[key] = map[string]json.RawMessage{}
		}
		tp.keys[key][ref] = meta
		want[key] = append(want[key], meta)
	}
	for _, l := range want {
		slices.SortFunc(l, func(a, b json.RawMessage) int { return strings.Compare(string(a), string(b)) })
	}
	got := tp.stateLocked()
	if exp := appendPresences(nil, want); string(got) != string(exp) {
		t.Fatalf("state\n%s\nwant\n%s", got, exp)
	}
	var st presState
	if err := json.Unmarshal(got, &st); err != nil || len(st) != 17 {
		t.Fatalf("state decodes to %d keys: %v", len(st), err)
	}
	if empty := (&presTopic{keys: map[string]map[string]json.RawMessage{}}).stateLocked(); string(empty) != "{}" {
		t.Fatalf("empty state %s", empty)
	}
}

// BenchmarkPresenceState encodes the presence_state of a 1,000-member room
// (one connection each), what every join of a storm's churn does.
func BenchmarkPresenceState(b *testing.B) {
	tp := &presTopic{keys: map[string]map[string]json.RawMessage{}}
	for i := range 1000 {
		ref := fmt.Sprintf("r%d", i)
		tp.keys[fmt.Sprintf("m%d", i)] = map[string]json.RawMessage{ref: makeMeta(ref, "", int64(i), "d", nil)}
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = tp.stateLocked()
	}
}
