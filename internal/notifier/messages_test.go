package notifier

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
)

// Error texts read once and quote the offending value safely (issue 16,
// item 7).
func TestErrorMessages(t *testing.T) {
	w := newWorld(t)
	n := startNotifier(t, w, Config{})
	tests := []struct {
		id, want string
	}{
		{"ÄÖ", `id: character 'Ä' at 0 is not allowed (use A-Z a-z 0-9 _ -)`},
		{"ab.c", `id: character '.' at 2 is not allowed (use A-Z a-z 0-9 _ -)`},
		{"a\u202eb", `id: character '\u202e' at 1 is not allowed (use A-Z a-z 0-9 _ -)`},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodGet, n.url+"/v1/jobs/"+url.PathEscape(tt.id)+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+token(t, "alice", false))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(b, &body); err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("GET events of %q: %d %s", tt.id, resp.StatusCode, b)
		}
		if body.Error.Code != "invalid_id" || body.Error.Message != tt.want {
			t.Errorf("GET events of %q: %q %q\nwant message %q", tt.id, body.Error.Code, body.Error.Message, tt.want)
		}
	}
}
