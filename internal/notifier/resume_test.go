package notifier

import (
	"encoding/json"
	"testing"
	"time"
)

// userPush is a user-topic push with its resume point.
type userPush struct {
	Seq       uint64  `json:"seq"`
	StreamSeq uint64  `json:"stream_seq"`
	ResumeSeq *uint64 `json:"resume_seq"`
}

func nextUserPush(t *testing.T, c *client, topic string) userPush {
	t.Helper()
	for {
		f, ok := c.next(10 * time.Second)
		if !ok {
			t.Fatal("no push")
		}
		if f.Topic == topic && f.Event == "job" {
			var p userPush
			if err := json.Unmarshal(f.Payload, &p); err != nil {
				t.Fatal(err)
			}
			if p.ResumeSeq == nil {
				t.Fatalf("user push without resume_seq: %s", f.Payload)
			}
			return p
		}
	}
}

// TestUserTopicResumeSeq: user-topic pushes and the join reply carry
// resume_seq, the subscriber's contiguous watermark: never beyond an event
// that may still arrive late, moving up as the topic is reconciled, and a
// rejoin with last_seq = resume_seq replays everything after it.
func TestUserTopicResumeSeq(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{reconcileEvery: 100 * time.Millisecond})
	a := w.newJob(t, "alice")
	c := dial(t, n, token(t, "alice", false))
	f, _ := c.join("user:alice", nil)
	var reply struct {
		ResumeSeq *uint64 `json:"resume_seq"`
	}
	if err := json.Unmarshal(f.response(), &reply); err != nil || reply.ResumeSeq == nil {
		t.Fatalf("join reply without resume_seq: %s", f.Payload)
	}
	w.progress(t, a, 10)
	p1 := nextUserPush(t, c, "user:alice")
	if *p1.ResumeSeq >= p1.StreamSeq || *p1.ResumeSeq < *reply.ResumeSeq {
		t.Fatalf("first push: resume_seq %d, stream_seq %d, join's %d", *p1.ResumeSeq, p1.StreamSeq, *reply.ResumeSeq)
	}
	// Once the sweeper has read the topic up to the stream's end, a later
	// push says everything up to the first push arrived.
	tp := topicOf(t, n, "user:alice")
	waitFor(t, 5*time.Second, func() bool {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		return tp.mark >= p1.StreamSeq
	})
	w.progress(t, a, 20)
	p2 := nextUserPush(t, c, "user:alice")
	if *p2.ResumeSeq < p1.StreamSeq || *p2.ResumeSeq >= p2.StreamSeq {
		t.Fatalf("second push: resume_seq %d, stream_seq %d (first %d)", *p2.ResumeSeq, p2.StreamSeq, p1.StreamSeq)
	}

	// Resuming from the first push's resume_seq replays both events, and
	// the replayed pushes carry resume_seq up to themselves.
	c2 := dial(t, n, token(t, "alice", false))
	f, _ = c2.join("user:alice", map[string]any{"last_seq": *p1.ResumeSeq})
	var r2 struct {
		Recovered bool   `json:"recovered"`
		ResumeSeq uint64 `json:"resume_seq"`
	}
	_ = json.Unmarshal(f.response(), &r2)
	if !r2.Recovered || r2.ResumeSeq != *p1.ResumeSeq {
		t.Fatalf("resume join: %s", f.Payload)
	}
	for _, want := range []uint64{p1.StreamSeq, p2.StreamSeq} {
		p := nextUserPush(t, c2, "user:alice")
		if p.StreamSeq != want || *p.ResumeSeq != want {
			t.Fatalf("replayed push %+v (resume %d), want stream_seq %d", p, *p.ResumeSeq, want)
		}
	}
}
