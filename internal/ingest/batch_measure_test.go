package ingest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// TestBatchThroughputLog logs jobs/s through POST /v1/jobs/batch beside a
// raw JetStream async publish of the same envelopes in the same run (the
// baseline). It measures, it asserts nothing about time; BENCHMARKS.md
// takes its figures from a run without -race.
func TestBatchThroughputLog(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement")
	}
	h := newHarness(t, nil)
	tok := token(t, "bench")
	const batches, size = 5, 1000
	items := make([]string, size)
	for i := range items {
		items[i] = fmt.Sprintf(`{"kind":"image","input":{"prompt":"p%d"}}`, i)
	}
	body := `{"jobs":[` + strings.Join(items, ",") + `]}`
	start := time.Now()
	for range batches {
		if b := h.batch(tok, body).batchAnswer(t); b.Accepted != size {
			t.Fatalf("accepted %d", b.Accepted)
		}
	}
	viaHTTP := time.Since(start)

	start = time.Now()
	for range batches {
		for i := range size {
			job := envelope.Job{ID: newJobID(), User: "bench", Kind: "image", Priority: envelope.PriorityNormal,
				Input: []byte(fmt.Sprintf(`{"prompt":"p%d"}`, i)), CreatedAt: time.Now().UTC()}
			m, err := envelope.NewJobMsg(job, "/bench", "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.js.PublishMsgAsync(m, jetstream.WithExpectStream(streams.Jobs)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-h.js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			t.Fatal("PubAcks missing")
		}
	}
	raw := time.Since(start)
	n := float64(batches * size)
	t.Logf("batches of %d: %.0f jobs/s through POST /v1/jobs/batch (job + index entry), raw async publish %.0f jobs/s: %.2fx",
		size, n/viaHTTP.Seconds(), n/raw.Seconds(), raw.Seconds()/viaHTTP.Seconds())
}
