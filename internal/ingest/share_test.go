package ingest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
)

func shareOf(t *testing.T, h *harness, tok, id, body string) (string, response) {
	t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	r := h.do(http.MethodPost, "/v1/jobs/"+id+"/share", b, bearer(tok))
	var s shareResponse
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &s); err != nil || s.Token == "" || s.Job != id {
			t.Fatalf("share answer %s: %v", r.Body, err)
		}
	}
	return s.Token, r
}

// TestShareToken: the owner shares a job; the token reads that job (GET,
// outputs) and is refused everywhere else, on another job, and expired.
func TestShareToken(t *testing.T) {
	h, id, video := outputHarness(t)
	alice := token(t, "alice")
	other := h.submit(alice, `{"kind":"image"}`).snapshot(t).ID

	share, r := shareOf(t, h, alice, id, `{"ttl_seconds": 600}`)
	if r.Status != http.StatusOK {
		t.Fatalf("share: %d %s", r.Status, r.Body)
	}
	var s shareResponse
	_ = json.Unmarshal(r.Body, &s)
	if d := time.Until(s.ExpiresAt); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("expires_at %v", s.ExpiresAt)
	}
	sb := bearer(share)
	if r := h.do(http.MethodGet, "/v1/jobs/"+id, nil, sb); r.Status != http.StatusOK || r.snapshot(t).ID != id {
		t.Fatalf("GET with the share token: %d %s", r.Status, r.Body)
	}
	if r := h.do(http.MethodGet, "/v1/jobs/"+id+"/outputs/0.mp4", nil, sb); r.Status != http.StatusOK || len(r.Body) != len(video) {
		t.Fatalf("output with the share token: %d", r.Status)
	}
	if r := h.do(http.MethodGet, "/v1/jobs/"+id+"/outputs/0.mp4/link", nil, sb); r.Status != http.StatusOK {
		t.Fatalf("output link with the share token: %d %s", r.Status, r.Body)
	}
	// Everything else is refused, with a JSON error that says why.
	for _, c := range []struct{ method, path, body string }{
		{http.MethodGet, "/v1/jobs/" + other, ""},
		{http.MethodGet, "/v1/jobs/" + other + "/outputs/0.mp4", ""},
		{http.MethodDelete, "/v1/jobs/" + id, ""},
		{http.MethodPost, "/v1/jobs/" + id + "/share", ""},
		{http.MethodPost, "/v1/jobs", `{"kind":"image"}`},
	} {
		var b []byte
		if c.body != "" {
			b = []byte(c.body)
		}
		r := h.do(c.method, c.path, b, sb)
		if r.Status != http.StatusForbidden || r.errorCode(t) != CodeForbidden || !strings.Contains(string(r.Body), "share token") {
			t.Errorf("%s %s with a share token: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
	// Owner only: not another user, not an admin; the ttl is bounded.
	if _, r := shareOf(t, h, token(t, "bob"), id, ""); r.Status != http.StatusForbidden {
		t.Errorf("bob shares alice's job: %d", r.Status)
	}
	if _, r := shareOf(t, h, adminToken(t, "ops"), id, ""); r.Status != http.StatusForbidden {
		t.Errorf("an admin shares alice's job: %d", r.Status)
	}
	for _, body := range []string{`{"ttl_seconds": 86401}`, `{"ttl_seconds": 0}`, `{"ttl": 5}`, `[`} {
		if _, r := shareOf(t, h, alice, id, body); r.Status != http.StatusBadRequest {
			t.Errorf("share %s: %d %s", body, r.Status, r.Body)
		}
	}
	if tok, r := shareOf(t, h, alice, id, ""); r.Status != http.StatusOK || tok == "" {
		t.Errorf("share with an empty body: %d", r.Status)
	}
	// Expired: refused (401).
	old, err := auth.IssueShare(testSecret, "alice", id, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(7 * time.Second) // past exp and the verifier's 5 s leeway
	if r := h.do(http.MethodGet, "/v1/jobs/"+id, nil, bearer(old)); r.Status != http.StatusUnauthorized || r.errorCode(t) != CodeUnauthorized {
		t.Errorf("expired share token: %d %s", r.Status, r.Body)
	}
}
