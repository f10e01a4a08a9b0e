package envelope

import (
	"errors"
	"testing"
)

func TestSubjects(t *testing.T) {
	if got := JobSubject(PriorityHigh, "image"); got != "jobs.high.image" {
		t.Errorf("JobSubject = %q", got)
	}
	if got := JobMsgSubject(PriorityHigh, "image", "j1"); got != "jobs.high.image.j1" {
		t.Errorf("JobMsgSubject = %q", got)
	}
	if got := JobLookupSubject("j1"); got != "jobs.*.*.j1" {
		t.Errorf("JobLookupSubject = %q", got)
	}
	if got := EventSubject("u1", "j1"); got != "events.u1.j1" {
		t.Errorf("EventSubject = %q", got)
	}
	if got := DLQSubject("video"); got != "dlq.video" {
		t.Errorf("DLQSubject = %q", got)
	}
	if got := UserEventsSubject("u1"); got != "events.u1.*" {
		t.Errorf("UserEventsSubject = %q", got)
	}
	if got := LiveSubject(EventSubject("u1", "j1")); got != "live.events.u1.j1" {
		t.Errorf("LiveSubject = %q", got)
	}
	if got := LiveSubject(UserEventsSubject("u1")); got != "live.events.u1.*" {
		t.Errorf("LiveSubject(user) = %q", got)
	}
	if got := CancelSubject("u1", "j1"); got != "cancel.u1.j1" {
		t.Errorf("CancelSubject = %q", got)
	}
	if CancelFilter != "cancel.*.*" {
		t.Errorf("CancelFilter = %q", CancelFilter)
	}
	if got := DLQMarkerKey("j1"); got != "dlq.j1" {
		t.Errorf("DLQMarkerKey = %q", got)
	}
}

func TestIsJobEventSubject(t *testing.T) {
	for s, want := range map[string]bool{
		"events.u1.j1":    true,
		"events.u1.*":     false,
		"events.u1.>":     false,
		"events.*.*":      false,
		"events.u1":       false,
		"events.u1.j1.x":  false,
		"events..j1":      false,
		"events.u1.":      false,
		"jobs.low.video":  false,
		"live.events.u.j": false,
		"":                false,
	} {
		if got := IsJobEventSubject(s); got != want {
			t.Errorf("IsJobEventSubject(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestParseEventSubject(t *testing.T) {
	user, job, err := ParseEventSubject("events.u-1.j_1")
	if err != nil || user != "u-1" || job != "j_1" {
		t.Fatalf("ParseEventSubject = %q %q %v", user, job, err)
	}
	for _, s := range []string{"", "events", "events.u1", "events.u1.*", "events.*.j1", "events.u1.j1.x", "events..j1", "jobs.u1.j1", "events.u 1.j1"} {
		if _, _, err := ParseEventSubject(s); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("ParseEventSubject(%q) = %v, want ErrInvalidToken", s, err)
		}
	}
}

func TestEventSubjectOfLive(t *testing.T) {
	if s, ok := EventSubjectOfLive("live.events.u1.j1"); !ok || s != "events.u1.j1" {
		t.Errorf("EventSubjectOfLive = %q %v", s, ok)
	}
	if _, ok := EventSubjectOfLive("events.u1.j1"); ok {
		t.Error("EventSubjectOfLive accepted a stored subject")
	}
}

func TestParseCancelSubject(t *testing.T) {
	user, job, err := ParseCancelSubject(CancelSubject("alice", "j-1"))
	if err != nil || user != "alice" || job != "j-1" {
		t.Fatalf("ParseCancelSubject = %q %q %v", user, job, err)
	}
	for _, s := range []string{"", "cancel", "cancel.alice", "cancel.alice.j1.x", "events.alice.j1", "cancel..j1", "cancel.alice.*"} {
		if _, _, err := ParseCancelSubject(s); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("ParseCancelSubject(%q) = %v, want ErrInvalidToken", s, err)
		}
	}
}

func TestJobFilterAndPublishedSubject(t *testing.T) {
	if got := JobFilter(PriorityNormal, "image"); got != "jobs.normal.image.*" {
		t.Errorf("JobFilter = %q", got)
	}
	if ValidateID("job", QueueToken) == nil {
		t.Errorf("QueueToken %q is a valid job id: a job subject could collide with it", QueueToken)
	}
	for stored, want := range map[string]string{
		"jobs.normal.image.~queue": "jobs.normal.image",
		"jobs.normal.image.j1":     "jobs.normal.image.j1",
		"jobs.normal.image":        "jobs.normal.image",
	} {
		if got := PublishedJobSubject(stored); got != want {
			t.Errorf("PublishedJobSubject(%q) = %q, want %q", stored, got, want)
		}
	}
}

func TestParseJobSubject(t *testing.T) {
	p, kind, id, err := ParseJobSubject("jobs.low.video")
	if err != nil || p != PriorityLow || kind != "video" || id != "" {
		t.Fatalf("ParseJobSubject(queue) = %q %q %q %v", p, kind, id, err)
	}
	p, kind, id, err = ParseJobSubject("jobs.low.video.~queue")
	if err != nil || p != PriorityLow || kind != "video" || id != "" {
		t.Fatalf("ParseJobSubject(stored queue) = %q %q %q %v", p, kind, id, err)
	}
	p, kind, id, err = ParseJobSubject("jobs.high.image.j-1")
	if err != nil || p != PriorityHigh || kind != "image" || id != "j-1" {
		t.Fatalf("ParseJobSubject(job) = %q %q %q %v", p, kind, id, err)
	}
	for _, s := range []string{
		"", "jobs", "jobs.low", "jobs.low.video.x.y", "events.low.video",
		"jobs.urgent.video", "jobs.low.Video", "jobs.low.*", "jobs.>", "jobs..video",
		"jobs.low.video.*", "jobs.low.video.>", "jobs.low.video.", "jobs.*.*.j1",
		"jobs.low.video.~queue.x", "jobs.low.video.~other", "jobs.low.video.~",
	} {
		if _, _, _, err := ParseJobSubject(s); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("ParseJobSubject(%q) = %v, want ErrInvalidToken", s, err)
		}
	}
}

func TestWebhookSubjects(t *testing.T) {
	if got := WebhookSubject(WebhookCog, "j1", true); got != "webhooks.cog.j1.final" {
		t.Fatalf("final = %q", got)
	}
	if got := WebhookSubject(WebhookReplicate, "j1", false); got != "webhooks.replicate.j1.update" {
		t.Fatalf("update = %q", got)
	}
	for _, final := range []bool{false, true} {
		api, job, f, err := ParseWebhookSubject(WebhookSubject(WebhookReplicate, "j-2", final))
		if err != nil || api != WebhookReplicate || job != "j-2" || f != final {
			t.Fatalf("parse: %q %q %v %v", api, job, f, err)
		}
	}
	for _, bad := range []string{"webhooks.cog.j1", "webhooks.http.j1.final", "webhooks.cog.j1.other", "events.cog.j1.final", "webhooks.cog.*.final", "webhooks.cog.j1.final.x"} {
		if _, _, _, err := ParseWebhookSubject(bad); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
}
