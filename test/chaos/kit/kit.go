// Package kit holds what the reliability and security tests share: a
// bounded poll, a job submitter for ingest's HTTP API and a Phoenix V2
// WebSocket client for the notifier. It is test support, not product code.
package kit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
)

// WaitFor polls cond every few milliseconds until it holds or timeout
// passes, then fails the test with what.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Submission is the answer to one POST /v1/jobs.
type Submission struct {
	Status     int
	Snapshot   envelope.Snapshot
	RetryAfter string
	Body       []byte
}

// Submit posts body to base+"/v1/jobs" with token; key, when not empty, is
// the Idempotency-Key.
func Submit(ctx context.Context, c *http.Client, base, token, key string, body any) (Submission, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return Submission{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/jobs", bytes.NewReader(b))
	if err != nil {
		return Submission{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return Submission{}, err
	}
	defer resp.Body.Close()
	out := Submission{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
	out.Body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return out, err
	}
	if resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(out.Body, &out.Snapshot); err != nil {
			return out, fmt.Errorf("kit: 202 body: %w", err)
		}
	}
	return out, nil
}

// Get reads GET base+"/v1/jobs/"+id.
func Get(ctx context.Context, c *http.Client, base, token, id string) (int, envelope.Snapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+id, nil)
	if err != nil {
		return 0, envelope.Snapshot{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, envelope.Snapshot{}, err
	}
	defer resp.Body.Close()
	var snap envelope.Snapshot
	if resp.StatusCode == http.StatusOK {
		err = json.NewDecoder(resp.Body).Decode(&snap)
	}
	return resp.StatusCode, snap, err
}

// SimJob is a POST /v1/jobs body for the sim provider.
func SimJob(kind string, sim map[string]any) map[string]any {
	return map[string]any{"kind": kind, "input": map[string]any{"sim": sim}}
}
