package devstack_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/pkg/envelope"
)

// The three walk-through jobs of the README, over real HTTP on the stack.
func TestWalkThrough(t *testing.T) {
	st := devstacktest.Start(t)
	cases := []struct {
		name, input string
		status      envelope.Status
		attempt     int
		progress    int
		errText     bool
	}{
		{"steps", `{"sim":{"steps":3,"duration_ms":60}}`, envelope.StatusSucceeded, 1, 100, false},
		{"fail twice", `{"sim":{"fail_times":2}}`, envelope.StatusSucceeded, 3, 100, false},
		{"terminal", `{"sim":{"fail":"terminal"}}`, envelope.StatusFailed, 1, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := devstacktest.Submit(t, st.IngestURL, st.Token, fmt.Sprintf(`{"kind":"image","input":%s}`, tc.input), nil)
			if s.Status != envelope.StatusQueued || s.User != "dev" {
				t.Fatalf("202 snapshot = %+v", s)
			}
			got := devstacktest.WaitTerminal(t, st.IngestURL, st.Token, s.ID, 30*time.Second)
			if got.Status != tc.status || got.Attempt != tc.attempt || got.Progress != tc.progress || (got.Error != "") != tc.errText {
				t.Fatalf("final snapshot = %+v, want status %s attempt %d progress %d error %v",
					got, tc.status, tc.attempt, tc.progress, tc.errText)
			}
		})
	}
}

// The demo page talks to one origin: the notifier's address proxies
// /v1/jobs to ingest.
func TestPageOriginProxiesIngest(t *testing.T) {
	st := devstacktest.Start(t)
	s := devstacktest.Submit(t, st.NotifierURL, st.Token, `{"kind":"video"}`, nil)
	got := devstacktest.WaitTerminal(t, st.NotifierURL, st.Token, s.ID, 30*time.Second)
	if got.Status != envelope.StatusSucceeded || got.Kind != "video" {
		t.Fatalf("final snapshot = %+v", got)
	}
}
