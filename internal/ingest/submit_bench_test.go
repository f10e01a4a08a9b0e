package ingest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/telemetry"
	"github.com/beamline/beamline/pkg/envelope"
)

// The per-submission pieces of POST /v1/jobs outside NATS, one by one
// (BENCHMARKS.md, run U): go test -run XXX -bench Submission -benchmem ./internal/ingest

func BenchmarkSubmissionDecode(b *testing.B) {
	body := []byte(`{"kind":"image","input":{}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeSubmit(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSubmissionAnswer(b *testing.B) {
	job := envelope.Job{ID: newJobID(), User: "ingestbench", Kind: "image", Priority: envelope.PriorityNormal, CreatedAt: time.Now().UTC()}
	snap := envelope.NewSnapshot(job)
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		w := discardWriter{h: http.Header{}}
		for b.Loop() {
			httpx.WriteJSON(w, http.StatusAccepted, snap)
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		w := discardWriter{h: http.Header{}}
		for b.Loop() {
			line, _ := appendSnapshotJSON(make([]byte, 0, snapshotJSONSize), &snap)
			httpx.WriteJSONLine(w, http.StatusAccepted, line)
		}
	})
}

// BenchmarkSubmissionMiddleware is the chain around the submit handler
// (metrics, then the trace context) without a TracerProvider.
func BenchmarkSubmissionMiddleware(b *testing.B) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s := &Service{cfg: Config{}}
	s.tracer = telemetry.Tracer(nil) // as New makes it
	h := m.instrument(routeSubmit, s.traced(routeSubmit, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	})))
	r := httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(""))
	w := discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}
