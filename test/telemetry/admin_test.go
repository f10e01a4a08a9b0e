package telemetry_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/telemetry"
)

// An admin joins admin:metrics and receives live figures that follow the
// pipeline; a non-admin is refused.
func TestAdminMetricsPushes(t *testing.T) {
	st := start(t, nil)

	user := dial(t, st, st.Token)
	if s, resp := user.join(telemetry.AdminTopic); s != "error" || !strings.Contains(string(resp), "unauthorized") {
		t.Fatalf("non-admin join: %s %s", s, resp)
	}

	admin := dial(t, st, st.AdminToken)
	if s, resp := admin.join(telemetry.AdminTopic); s != "ok" {
		t.Fatalf("admin join: %s %s", s, resp)
	}
	next := func() telemetry.AdminMetrics {
		t.Helper()
		for {
			f, err := admin.read(10 * time.Second)
			if err != nil {
				t.Fatalf("no metrics push: %v", err)
			}
			if f.Topic == telemetry.AdminTopic && f.Event == telemetry.AdminEvent {
				var m telemetry.AdminMetrics
				dec := json.NewDecoder(strings.NewReader(string(f.Payload)))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&m); err != nil {
					t.Fatalf("payload %s: %v", f.Payload, err)
				}
				return m
			}
		}
	}
	// Two sockets are open (the refused user's stays connected).
	var m telemetry.AdminMetrics
	deadline := time.Now().Add(15 * time.Second)
	for m = next(); m.NotifierConnections < 2 || m.Breakers["sim"] != "closed"; m = next() {
		if time.Now().After(deadline) {
			t.Fatalf("figures never showed the connections and the breaker: %+v", m)
		}
	}
	if _, err := time.Parse(time.RFC3339, m.At); err != nil {
		t.Fatalf("at %q: %v", m.At, err)
	}

	// Jobs that succeed, retry and fail show up as rates.
	var sawSucceeded, sawRetried, sawFailed bool
	for i := 0; i < 5; i++ {
		submit(t, st, `{"kind":"image","input":{"sim":{"duration_ms":50}}}`, nil)
	}
	submit(t, st, `{"kind":"image","input":{"sim":{"fail_times":1}}}`, nil)
	submit(t, st, `{"kind":"video","input":{"sim":{"fail":"terminal"}}}`, nil)
	deadline = time.Now().Add(20 * time.Second)
	for !(sawSucceeded && sawRetried && sawFailed) {
		if time.Now().After(deadline) {
			t.Fatalf("rates never moved: succeeded %v retried %v failed %v (last %+v)", sawSucceeded, sawRetried, sawFailed, m)
		}
		m = next()
		sawSucceeded = sawSucceeded || m.JobsPerSecond.Succeeded > 0
		sawRetried = sawRetried || m.JobsPerSecond.Retried > 0
		sawFailed = sawFailed || m.JobsPerSecond.Failed > 0
	}
}
