package faults

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
)

// These run under -short too: the checker's own logic, without processes.

func TestScheduleIsASeedsFunction(t *testing.T) {
	a, b := makeSchedule(42, time.Minute, 16), makeSchedule(42, time.Minute, 16)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("one seed drew two schedules")
	}
	if c := makeSchedule(43, time.Minute, 16); reflect.DeepEqual(a.Jobs, c.Jobs) {
		t.Fatal("two seeds drew the same jobs")
	}
	if len(a.Jobs) == 0 || len(a.Faults) == 0 {
		t.Fatalf("empty schedule: %s", a.summary())
	}
	for _, f := range a.Faults {
		if f.At >= time.Minute {
			t.Errorf("fault %s beyond the schedule", f)
		}
	}
}

func pushOf(id string, seq uint64, st envelope.Status) push {
	return push{Type: string(envelope.EventType(st)), Seq: seq, Job: envelope.Snapshot{ID: id, Seq: seq, Status: st}}
}

func TestViewFlagsGapsDuplicatesAndOrder(t *testing.T) {
	v := newView(0)
	v.receive(pushOf("j", 1, envelope.StatusRunning), false)
	v.receive(pushOf("j", 3, envelope.StatusSucceeded), false) // 2 missing on the wire
	v.receive(pushOf("j", 2, envelope.StatusRunning), false)   // late: out of order
	v.receive(pushOf("j", 2, envelope.StatusRunning), false)   // duplicate on a job topic
	if v.watermark() != 3 {
		t.Errorf("watermark %d, want 3", v.watermark())
	}
	want := []string{"gap on the wire", "out of order", "pushed twice"}
	if len(v.problems) != len(want) {
		t.Fatalf("problems %q, want %d", v.problems, len(want))
	}
	for i, w := range want {
		if !strings.Contains(v.problems[i], w) {
			t.Errorf("problem %d = %q, want %q", i, v.problems[i], w)
		}
	}
	// On a user topic a resend of the same event is allowed; other content
	// under the same seq never is.
	u := newView(0)
	u.receive(pushOf("j", 1, envelope.StatusRunning), true)
	u.receive(pushOf("j", 1, envelope.StatusRunning), true)
	if len(u.problems) != 0 || u.dups != 1 {
		t.Errorf("user-topic resend: problems %q dups %d", u.problems, u.dups)
	}
	u.receive(pushOf("j", 1, envelope.StatusCancelled), true)
	if len(u.problems) != 1 {
		t.Errorf("different content under one seq not flagged: %q", u.problems)
	}
}

func TestViewUnrecoveredJoinCoversUpToTheSnapshot(t *testing.T) {
	v := newView(0)
	v.receive(pushOf("j", 1, envelope.StatusRunning), false)
	v.unrecover(3) // told plainly: seqs 2 and 3 are covered by the snapshot
	v.receive(pushOf("j", 4, envelope.StatusSucceeded), false)
	if len(v.problems) != 0 || v.watermark() != 4 || !v.skipped[2] || !v.skipped[3] {
		t.Fatalf("problems %q watermark %d skipped %v", v.problems, v.watermark(), v.skipped)
	}
}
