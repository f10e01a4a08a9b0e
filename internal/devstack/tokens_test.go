package devstack_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
)

// A token has one spelling: the same token with its last character changed
// within its 4-character base64 group (w -> x) is refused by ingest (401)
// and by the notifier (WebSocket 403) (issue 16, item 8).
func TestOtherSpellingOfATokenRefused(t *testing.T) {
	st := devstacktest.Start(t)
	alts := auth.OtherSpellings(st.Token)
	if len(alts) == 0 {
		t.Fatal("no other spelling of the dev token")
	}
	submit := func(tok string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, st.IngestURL+"/v1/jobs", strings.NewReader(`{"kind":"image"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body struct{ Error struct{ Message string } }
		_ = json.Unmarshal(b, &body)
		return resp.StatusCode, body.Error.Message
	}
	// The right spelling works, and is then in ingest's token cache: the
	// other spellings must not hit it either.
	if code, msg := submit(st.Token); code != http.StatusAccepted {
		t.Fatalf("the token itself: %d %s", code, msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, alt := range alts {
		if code, msg := submit(alt); code != http.StatusUnauthorized {
			t.Errorf("ingest took the token ending %q: %d %s", alt[len(alt)-2:], code, msg)
		} else {
			t.Logf("ingest: %d %s", code, msg)
		}
		c, resp, err := phoenixtest.Dial(ctx, phoenixtest.URL(st.NotifierURL, alt), phoenixtest.Options{})
		if err == nil {
			c.Close()
			t.Errorf("the notifier opened a socket on the token ending %q", alt[len(alt)-2:])
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("socket on the token ending %q: %v, want 403", alt[len(alt)-2:], err)
		}
	}
}
