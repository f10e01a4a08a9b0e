package devstack_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/pkg/envelope"
)

// submit POSTs a job and returns the 202 snapshot.
func submit(t *testing.T, base, token, body string) envelope.Snapshot {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/jobs", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs = %d %s", resp.StatusCode, b)
	}
	var s envelope.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func get(t *testing.T, base, token, id string) envelope.Snapshot {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/jobs/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/jobs/%s = %d %s", id, resp.StatusCode, b)
	}
	var s envelope.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitTerminal polls GET until the job is terminal (the test stands in for
// a client that still polls; push is tested in the notifier).
func waitTerminal(t *testing.T, base, token, id string) envelope.Snapshot {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := get(t, base, token, id)
		if s.Status.Terminal() {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not terminal in time: %+v", id, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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
			s := submit(t, st.IngestURL, st.Token, fmt.Sprintf(`{"kind":"image","input":%s}`, tc.input))
			if s.Status != envelope.StatusQueued || s.User != "dev" {
				t.Fatalf("202 snapshot = %+v", s)
			}
			got := waitTerminal(t, st.IngestURL, st.Token, s.ID)
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
	s := submit(t, st.NotifierURL, st.Token, `{"kind":"video"}`)
	got := waitTerminal(t, st.NotifierURL, st.Token, s.ID)
	if got.Status != envelope.StatusSucceeded || got.Kind != "video" {
		t.Fatalf("final snapshot = %+v", got)
	}
}
