// Package telemetry_test checks Beamline's observability across the three
// services, run in-process by devstack on a real embedded nats-server.
package telemetry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

// start runs a devstack with quick retries and metric refreshes; tune may
// adjust the configuration further.
func start(t *testing.T, tune func(*devstack.Config)) *devstack.Stack {
	t.Helper()
	return devstacktest.Start(t, func(c *devstack.Config) {
		c.Tune = devstack.Tuning{Processor: func(c *processor.Config) {
			c.BackoffMin, c.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
			c.MetricsInterval = 100 * time.Millisecond
		}}
	}, tune)
}

// submit POSTs a job as the dev user and returns its 202 snapshot.
func submit(t *testing.T, st *devstack.Stack, body string, header http.Header) envelope.Snapshot {
	t.Helper()
	return devstacktest.Submit(t, st.IngestURL, st.Token, body, header)
}

func waitTerminal(t *testing.T, st *devstack.Stack, id string) envelope.Snapshot {
	t.Helper()
	return devstacktest.WaitTerminal(t, st.IngestURL, st.Token, id, 20*time.Second)
}

// scrape reads base/metrics and parses it with the Prometheus text parser.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics = %d", base, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s/metrics does not parse: %v", base, err)
	}
	return mfs
}

// value is the value of the series of family name whose labels include
// want (summed over the matching series; histograms count samples).
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	return testutil.MetricValue([]*dto.MetricFamily{mf}, name, want)
}

// phx is a Phoenix Channels V2 WebSocket client.
type phx struct {
	t *testing.T
	c *phoenixtest.Client
}

func dial(t *testing.T, st *devstack.Stack, token string) *phx {
	t.Helper()
	c, resp, err := phoenixtest.Dial(context.Background(), phoenixtest.URL(st.NotifierURL, token), phoenixtest.Options{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(c.Abort)
	return &phx{t: t, c: c}
}

type frame = phoenixtest.Frame

// read returns the next frame that answers no join.
func (c *phx) read(timeout time.Duration) (frame, error) {
	select {
	case f, ok := <-c.c.Frames():
		if !ok {
			return frame{}, c.c.Err()
		}
		return f, nil
	case <-time.After(timeout):
		return frame{}, fmt.Errorf("no frame within %v", timeout)
	}
}

// join joins topic and returns the reply's status and response.
func (c *phx) join(topic string) (string, json.RawMessage) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.c.Join(ctx, topic, nil)
	if err != nil {
		c.t.Fatalf("join %s: %v", topic, err)
	}
	return r.Status, r.Response
}
