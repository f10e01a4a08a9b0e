// Package telemetry_test checks Beamline's observability across the three
// services, run in-process by devstack on a real embedded nats-server.
package telemetry_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/processor"
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
	var sum float64
	found := false
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		found = true
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			sum += m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			sum += m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			sum += float64(m.GetHistogram().GetSampleCount())
		default:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, found
}

// phx is a Phoenix Channels V2 WebSocket client.
type phx struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, st *devstack.Stack, token string) *phx {
	t.Helper()
	u := "ws" + strings.TrimPrefix(st.NotifierURL, "http") + "/socket/websocket?vsn=2.0.0&token=" + token
	ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	return &phx{t: t, ws: ws}
}

type frame struct {
	JoinRef, Ref *string
	Topic, Event string
	Payload      json.RawMessage
}

func (c *phx) send(joinRef, ref, topic, event string, payload any) {
	c.t.Helper()
	if err := c.ws.WriteJSON([]any{joinRef, ref, topic, event, payload}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *phx) read(timeout time.Duration) (frame, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	var raw []json.RawMessage
	if err := c.ws.ReadJSON(&raw); err != nil {
		return frame{}, err
	}
	var f frame
	if len(raw) != 5 {
		return f, nil
	}
	_ = json.Unmarshal(raw[0], &f.JoinRef)
	_ = json.Unmarshal(raw[1], &f.Ref)
	_ = json.Unmarshal(raw[2], &f.Topic)
	_ = json.Unmarshal(raw[3], &f.Event)
	f.Payload = raw[4]
	return f, nil
}

// join joins topic and returns the reply's status and response.
func (c *phx) join(topic string) (string, json.RawMessage) {
	c.t.Helper()
	c.send("1", "1", topic, "phx_join", map[string]any{})
	for {
		f, err := c.read(10 * time.Second)
		if err != nil {
			c.t.Fatalf("join %s: %v", topic, err)
		}
		if f.Event == "phx_reply" && f.Ref != nil && *f.Ref == "1" {
			var r struct {
				Status   string          `json:"status"`
				Response json.RawMessage `json:"response"`
			}
			_ = json.Unmarshal(f.Payload, &r)
			return r.Status, r.Response
		}
	}
}
