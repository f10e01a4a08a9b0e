package devstack_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/cogfake"
	"github.com/beamline/beamline/pkg/envelope"
)

// TestCogKind: -kinds image,video=cog -cog-url <fake>: a video job runs as
// one Cog prediction (input without "sim") and its data: URL output is
// kept in the outputs bucket and named by the job's result; image jobs
// stay on the sim provider.
func TestCogKind(t *testing.T) {
	fake := cogfake.New(cogfake.Config{Slots: 2})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	st := devstacktest.Start(t, func(c *devstack.Config) {
		c.Kinds, _ = config.ParseKinds("image,video=cog")
		c.CogURLs = []string{srv.URL}
	})

	s := devstacktest.Submit(t, st.IngestURL, st.Token, `{"kind":"video","input":{"prompt":"a lighthouse","duration_ms":20,"sim":{"fail":"terminal"}}}`, nil)
	got := devstacktest.WaitTerminal(t, st.IngestURL, st.Token, s.ID, 30*time.Second)
	if got.Status != envelope.StatusSucceeded {
		t.Fatalf("video job = %+v, want succeeded", got)
	}
	want := cogfake.DataURL(provider.CogPredictionID(s.ID, 1), nil)
	body, _ := base64.StdEncoding.DecodeString(want[strings.Index(want, ",")+1:])
	if b, ct := storedOutput(t, st, got.Result); ct != "text/plain" || !bytes.Equal(b, body) {
		t.Fatalf("stored output %q (%s), want the fake's %q", b, ct, body)
	}
	if n := fake.StartedTotal(); n != 1 {
		t.Fatalf("Cog predictions = %d, want 1", n)
	}

	s = devstacktest.Submit(t, st.IngestURL, st.Token, `{"kind":"image","input":{"sim":{"duration_ms":5}}}`, nil)
	if got := devstacktest.WaitTerminal(t, st.IngestURL, st.Token, s.ID, 30*time.Second); got.Status != envelope.StatusSucceeded {
		t.Fatalf("image job = %+v", got)
	}
	if n := fake.StartedTotal(); n != 1 {
		t.Fatalf("Cog predictions = %d after an image job, want still 1", n)
	}
}

// storedOutput downloads the output a result names (the result is one
// outputs.Output) from ingest with the stack's dev token.
func storedOutput(t *testing.T, st *devstack.Stack, result json.RawMessage) ([]byte, string) {
	t.Helper()
	var o outputs.Output
	if err := json.Unmarshal(result, &o); err != nil || o.URL == "" {
		t.Fatalf("result = %s, want a stored output", result)
	}
	req, _ := http.NewRequest(http.MethodGet, st.IngestURL+o.URL, nil)
	req.Header.Set("Authorization", "Bearer "+st.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s %v", o.URL, resp.StatusCode, b, err)
	}
	return b, resp.Header.Get("Content-Type")
}
