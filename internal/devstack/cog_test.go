package devstack_test

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/cogfake"
	"github.com/beamline/beamline/pkg/envelope"
)

// TestCogKind: -kinds image,video=cog -cog-url <fake>: a video job runs as
// one Cog prediction (input without "sim") and its data: URL output is the
// job's result; image jobs stay on the sim provider.
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
	var url string
	if err := json.Unmarshal(got.Result, &url); err != nil || url != cogfake.DataURL(provider.CogPredictionID(s.ID, 1), nil) {
		t.Fatalf("result = %s, want the fake's data: URL", got.Result)
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
