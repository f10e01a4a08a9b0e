package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/test/chaos/kit"
)

// push is the payload of the notifier's "job" push.
type push struct {
	Type      string            `json:"type"`
	Job       envelope.Snapshot `json:"job"`
	Seq       uint64            `json:"seq"`
	StreamSeq uint64            `json:"stream_seq"`
	ResumeSeq *uint64           `json:"resume_seq"`
}

// got is one event as a client received it.
type got struct {
	Type   string
	Status envelope.Status
}

// view is what one client received of one job.
type view struct {
	// base: the client asked for the events after base (0, or the seq of
	// the snapshot of a join without last_seq).
	base uint64
	got  map[uint64]got
	max  uint64
	// skipped: seqs a join answered "recovered": false for; the client has
	// the join's snapshot instead, as the promise allows ("told plainly").
	skipped map[uint64]bool
	// Wire figures and promise breaks seen on arrival.
	arrivals    []uint64
	dups        int
	problems    []string
	unrecovered int
}

func newView(base uint64) *view {
	return &view{base: base, max: base, got: map[uint64]got{}, skipped: map[uint64]bool{}}
}

// skippedUpTo reports whether every seq from max+1 to k is skipped.
func (v *view) skippedUpTo(k uint64) bool {
	for s := v.max + 1; s <= k; s++ {
		if !v.skipped[s] {
			return false
		}
	}
	return true
}

// watermark is the highest k such that every seq in base+1..k was received:
// the last_seq of a job topic's resume.
func (v *view) watermark() uint64 {
	k := v.base
	for {
		if _, ok := v.got[k+1]; !ok && !v.skipped[k+1] {
			return k
		}
		k++
	}
}

// receive records one pushed event. dupOK: the topic may send an event
// again (a user: topic resumed from resume_seq does, by design; the client
// de-duplicates by seq).
func (v *view) receive(p push, dupOK bool) {
	v.arrivals = append(v.arrivals, p.Seq)
	g := got{Type: p.Type, Status: p.Job.Status}
	if p.Seq != p.Job.Seq {
		v.problems = append(v.problems, fmt.Sprintf("push seq %d carries a snapshot of seq %d", p.Seq, p.Job.Seq))
	}
	if p.Seq <= v.base {
		v.dups++
		if !dupOK {
			v.problems = append(v.problems, fmt.Sprintf("seq %d pushed, not asked for (base %d)", p.Seq, v.base))
		}
		return
	}
	if prev, ok := v.got[p.Seq]; ok {
		v.dups++
		if prev != g {
			v.problems = append(v.problems, fmt.Sprintf("seq %d pushed twice with different content: %v then %v", p.Seq, prev, g))
		} else if !dupOK {
			v.problems = append(v.problems, fmt.Sprintf("seq %d pushed twice", p.Seq))
		}
		return
	}
	if p.Seq > v.max+1 && !v.skippedUpTo(p.Seq-1) {
		v.problems = append(v.problems, fmt.Sprintf("seq %d pushed after %d (a gap on the wire)", p.Seq, v.max))
	} else if p.Seq < v.max && !v.skipped[p.Seq] {
		v.problems = append(v.problems, fmt.Sprintf("seq %d pushed after %d (out of order)", p.Seq, v.max))
	}
	v.got[p.Seq] = g
	v.max = max(v.max, p.Seq)
}

// unrecovered records a join that answered "recovered": false with a
// snapshot of seq snap: the seqs the client lacks up to it are covered by
// the snapshot.
func (v *view) unrecover(snap uint64) {
	v.unrecovered++
	for k := v.watermark() + 1; k <= snap; k++ {
		if _, ok := v.got[k]; !ok {
			v.skipped[k] = true
		}
	}
	v.max = max(v.max, snap)
}

// client is one browser-like Phoenix client of one user: either the
// user:<id> topic (resumed from resume_seq) or up to maxTopics job:<id>
// topics (resumed from each job's watermark). It reconnects whenever its
// connection ends, rejoining every topic with last_seq.
type client struct {
	name, base, token, user string
	userTopic               bool

	add  chan jobWatch
	drop chan struct{}

	mu       sync.Mutex
	views    map[string]*view // job id → view
	topics   []string         // job ids (job clients)
	fresh    map[string]bool  // job id → first join without last_seq, not yet joined
	resume   uint64           // user topic: last resume_seq
	sessions int
	joins    int
	refused  map[string]int // join error reason → count
	logf     func(string, ...any)
}

type jobWatch struct {
	id    string
	fresh bool
}

const maxTopics = 90 // the notifier allows 100 per connection

func newClient(name, base, token, user string, userTopic bool, logf func(string, ...any)) *client {
	return &client{name: name, base: base, token: token, user: user, userTopic: userTopic,
		add: make(chan jobWatch, maxTopics), drop: make(chan struct{}, 1),
		views: map[string]*view{}, fresh: map[string]bool{}, refused: map[string]int{}, logf: logf}
}

// run keeps a session open until ctx ends.
func (c *client) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := c.session(ctx); err != nil && ctx.Err() == nil && !strings.HasPrefix(err.Error(), "dial") {
			c.logf("%s: %v; reconnecting", c.name, err)
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// disconnect asks the client to close its connection and resume.
func (c *client) disconnect() {
	select {
	case c.drop <- struct{}{}:
	default:
	}
}

func (c *client) session(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	s, _, err := kit.Dial(dctx, c.base, c.token, nil)
	cancel()
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer s.Close()
	c.mu.Lock()
	c.sessions++
	c.mu.Unlock()
	joined := map[string]bool{} // topic → joined in this session
	pending := true
	retry := time.NewTicker(300 * time.Millisecond)
	defer retry.Stop()
	for {
		if pending {
			var err error
			if pending, err = c.joinAll(ctx, s, joined); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.Done():
			return s.Err()
		case <-c.drop:
			return nil
		case w := <-c.add:
			c.mu.Lock()
			c.topics = append(c.topics, w.id)
			c.fresh[w.id] = w.fresh
			c.mu.Unlock()
			pending = true
		case <-retry.C:
		case f := <-s.Pushes:
			if err := c.handle(f); err != nil {
				return err
			}
		}
	}
}

// joinAll joins every topic not yet joined in this session; it reports
// whether some join must be tried again.
func (c *client) joinAll(ctx context.Context, s *kit.Socket, joined map[string]bool) (bool, error) {
	var topics []string
	if c.userTopic {
		topics = []string{"user:" + c.user}
	} else {
		c.mu.Lock()
		for _, id := range c.topics {
			topics = append(topics, "job:"+id)
		}
		c.mu.Unlock()
	}
	again := false
	for _, topic := range topics {
		if joined[topic] {
			continue
		}
		ok, err := c.join(ctx, s, topic)
		if err != nil {
			return false, err
		}
		joined[topic] = ok
		again = again || !ok
	}
	return again, nil
}

func (c *client) join(ctx context.Context, s *kit.Socket, topic string) (bool, error) {
	id := strings.TrimPrefix(topic, "job:")
	c.mu.Lock()
	payload := map[string]any{}
	var sent uint64
	if c.userTopic {
		sent = c.resume
		payload["last_seq"] = sent
	} else if !c.fresh[id] {
		if v := c.views[id]; v != nil {
			sent = v.watermark()
		}
		payload["last_seq"] = sent
	}
	c.mu.Unlock()
	jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	r, err := s.Join(jctx, topic, payload)
	cancel()
	if err != nil {
		return false, fmt.Errorf("join %s: %w", topic, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Status != "ok" {
		var why struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(r.Response, &why)
		c.refused[why.Reason]++
		return false, nil
	}
	c.joins++
	var reply struct {
		Snapshot  *envelope.Snapshot  `json:"snapshot"`
		Recovered bool                `json:"recovered"`
		ResumeSeq uint64              `json:"resume_seq"`
		Jobs      []envelope.Snapshot `json:"jobs"`
	}
	if err := json.Unmarshal(r.Response, &reply); err != nil {
		return false, fmt.Errorf("join %s reply %s: %w", topic, r.Response, err)
	}
	if c.userTopic {
		if !reply.Recovered {
			c.views["*"] = c.viewOf("*", 0)
			c.views["*"].unrecovered++
			c.views["*"].problems = append(c.views["*"].problems, fmt.Sprintf("user join with last_seq %d: recovered false", sent))
			// The client takes the reply's snapshots of the open jobs;
			// jobs that ended meanwhile are not among them.
			for _, snap := range reply.Jobs {
				c.viewOf(snap.ID, 0).unrecover(snap.Seq)
			}
		}
		c.resume = reply.ResumeSeq
		return true, nil
	}
	snap := reply.Snapshot
	if snap == nil {
		return false, fmt.Errorf("join %s: no snapshot in %s", topic, r.Response)
	}
	if _, asked := payload["last_seq"]; !asked {
		c.views[id] = newView(snap.Seq)
		c.fresh[id] = false
		return true, nil
	}
	v := c.viewOf(id, 0)
	if !reply.Recovered {
		v.unrecover(snap.Seq)
	}
	if snap.Seq < sent {
		v.problems = append(v.problems, fmt.Sprintf("join with last_seq %d answered with an older snapshot, seq %d", sent, snap.Seq))
	}
	return true, nil
}

func (c *client) viewOf(id string, base uint64) *view {
	v := c.views[id]
	if v == nil {
		v = newView(base)
		c.views[id] = v
	}
	return v
}

func (c *client) handle(f kit.Frame) error {
	if f.Event != "job" {
		return nil
	}
	var p push
	if err := json.Unmarshal(f.Payload, &p); err != nil {
		return fmt.Errorf("job push %s: %w", f.Payload, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userTopic {
		c.viewOf(p.Job.ID, 0).receive(p, true)
		if p.ResumeSeq != nil {
			c.resume = *p.ResumeSeq
		}
		return nil
	}
	v := c.views[p.Job.ID]
	if v == nil {
		return fmt.Errorf("push for job %s before its join reply", p.Job.ID)
	}
	v.receive(p, false)
	return nil
}

// snapshotViews copies the views (for the checker).
func (c *client) snapshotViews() map[string]view {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]view, len(c.views))
	for id, v := range c.views {
		cp := *v
		cp.got = make(map[uint64]got, len(v.got))
		for k, g := range v.got {
			cp.got[k] = g
		}
		cp.problems = append([]string(nil), v.problems...)
		cp.arrivals = append([]uint64(nil), v.arrivals...)
		out[id] = cp
	}
	return out
}

// complete reports whether this client has received every event it should
// have of the jobs in last (job id → its user and last seq in EVENTS).
func (c *client) complete(last map[string]jobEnd) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userTopic {
		for id, e := range last {
			if e.User != c.user {
				continue
			}
			if v := c.views[id]; v == nil || v.watermark() < e.Seq {
				return false
			}
		}
		return true
	}
	for _, id := range c.topics {
		v := c.views[id]
		if v == nil || v.watermark() < last[id].Seq {
			return false
		}
	}
	return true
}

// jobEnd is a job's user and the seq of its last event.
type jobEnd struct {
	User string
	Seq  uint64
}
