package devstacktest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
)

// Submit POSTs a job body to base/v1/jobs with token (and any extra
// header) and returns the 202 snapshot; any other answer fails the test.
func Submit(t testing.TB, base, token, body string, header http.Header) envelope.Snapshot {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/jobs", bytes.NewBufferString(body))
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	return do(t, req, http.StatusAccepted)
}

// Get reads a job's snapshot from base/v1/jobs/{id}; any answer but 200
// fails the test.
func Get(t testing.TB, base, token, id string) envelope.Snapshot {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/jobs/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return do(t, req, http.StatusOK)
}

// WaitTerminal polls Get until the job is terminal, failing the test after
// timeout. (The test stands in for a client that still polls; push is
// tested in the notifier.)
func WaitTerminal(t testing.TB, base, token, id string, timeout time.Duration) envelope.Snapshot {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := Get(t, base, token, id)
		if s.Status.Terminal() {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not terminal in %s: %+v", id, timeout, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func do(t testing.TB, req *http.Request, want int) envelope.Snapshot {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	var s envelope.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}
