package kit

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
)

// JobEvent is the payload of the notifier's "job" push.
type JobEvent struct {
	Type      string            `json:"type"`
	Job       envelope.Snapshot `json:"job"`
	Seq       uint64            `json:"seq"`
	StreamSeq uint64            `json:"stream_seq"`
}

type userJoinReply struct {
	Jobs      []json.RawMessage `json:"jobs"`
	StreamSeq uint64            `json:"stream_seq"`
	Recovered bool              `json:"recovered"`
}

// Watcher watches user:<id> on the notifier like a browser would: when the
// connection drops it reconnects and rejoins with last_seq = the last stream
// seq it saw, then de-duplicates events by (job, seq).
type Watcher struct {
	Base, Token, User string
	// Logf, when set, reports reconnects.
	Logf func(format string, args ...any)

	mu         sync.Mutex
	lastStream uint64
	seen       map[string]map[uint64]bool
	terminal   map[string]int
	events     int
	dups       int
	joins      int
	unrecov    int
	outOfOrder int
	lastJobSeq map[string]uint64
	joined     bool
}

// WatcherStats are the figures of a Watcher.
type WatcherStats struct {
	Events, Duplicates, Joins, Unrecovered, OutOfOrder int
	// Gaps counts job seqs never received below each job's highest seq
	// seen: events the client silently missed.
	Gaps          int
	GapJobs       []string
	LastStreamSeq uint64
}

// Run connects, joins and reads until ctx ends, reconnecting (every 200ms)
// whenever the connection or the join fails.
func (w *Watcher) Run(ctx context.Context) {
	w.mu.Lock()
	if w.seen == nil {
		w.seen, w.terminal, w.lastJobSeq = map[string]map[uint64]bool{}, map[string]int{}, map[string]uint64{}
	}
	w.mu.Unlock()
	for ctx.Err() == nil {
		if err := w.session(ctx); err != nil && ctx.Err() == nil && w.Logf != nil {
			w.Logf("watcher: %v; reconnecting", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (w *Watcher) session(ctx context.Context) error {
	s, _, err := Dial(ctx, w.Base, w.Token, nil)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer s.Close()
	w.mu.Lock()
	last := w.lastStream
	w.mu.Unlock()
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	r, err := s.Join(jctx, "user:"+w.User, map[string]any{"last_seq": last})
	cancel()
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if r.Status != "ok" {
		return fmt.Errorf("join refused: %s %s", r.Status, r.Response)
	}
	var jr userJoinReply
	if err := json.Unmarshal(r.Response, &jr); err != nil {
		return fmt.Errorf("join reply: %w", err)
	}
	w.mu.Lock()
	w.joins++
	w.joined = true
	if !jr.Recovered {
		// A gap the client was told about: the snapshot is all it gets.
		w.unrecov++
	}
	w.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.Done():
			return s.Err()
		case f := <-s.Pushes:
			if f.Event != "job" {
				continue
			}
			var ev JobEvent
			if err := json.Unmarshal(f.Payload, &ev); err != nil {
				return fmt.Errorf("job push %s: %w", f.Payload, err)
			}
			w.record(ev)
		}
	}
}

func (w *Watcher) record(ev JobEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events++
	w.lastStream = max(w.lastStream, ev.StreamSeq)
	id := ev.Job.ID
	if w.seen[id] == nil {
		w.seen[id] = map[uint64]bool{}
	}
	if w.seen[id][ev.Seq] {
		w.dups++
		return
	}
	w.seen[id][ev.Seq] = true
	if ev.Seq < w.lastJobSeq[id] {
		w.outOfOrder++
	}
	w.lastJobSeq[id] = max(w.lastJobSeq[id], ev.Seq)
	if ev.Job.Status.Terminal() {
		w.terminal[id]++
	}
}

// Joined reports whether at least one join succeeded.
func (w *Watcher) Joined() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.joined
}

// Terminal returns, per job, how many distinct terminal events were seen.
func (w *Watcher) Terminal() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int, len(w.terminal))
	for k, v := range w.terminal {
		out[k] = v
	}
	return out
}

// Stats returns the figures so far.
func (w *Watcher) Stats() WatcherStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := WatcherStats{Events: w.events, Duplicates: w.dups, Joins: w.joins, Unrecovered: w.unrecov,
		OutOfOrder: w.outOfOrder, LastStreamSeq: w.lastStream}
	for id, seqs := range w.seen {
		if missing := int(w.lastJobSeq[id]) - len(seqs); missing > 0 {
			st.Gaps += missing
			st.GapJobs = append(st.GapJobs, id)
		}
	}
	return st
}
