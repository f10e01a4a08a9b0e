package ingest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
)

// TestScheduledStartDelayLog logs the start delay (first event time minus
// run_at) of many jobs due in the same second, with one processor. It
// measures, it asserts only that none started early.
func TestScheduledStartDelayLog(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement")
	}
	h := newHarness(t, nil)
	h.startProcessor()
	tok := token(t, "bench")
	const n = 2000
	runAt := time.Now().Add(3 * time.Second).UTC().Truncate(time.Second).Add(time.Second)
	items := make([]string, 1000)
	for i := range items {
		items[i] = `{"kind":"image","run_at":"` + runAt.Format(time.RFC3339Nano) + `","input":{"sim":{"duration_ms":0,"steps":1}}}`
	}
	body := `{"jobs":[` + strings.Join(items, ",") + `]}`
	for range n / 1000 {
		if b := h.batch(tok, body).batchAnswer(t); b.Accepted != 1000 {
			t.Fatalf("accepted %d", b.Accepted)
		}
	}
	if time.Now().After(runAt) {
		t.Skip("the machine is too slow to schedule ahead")
	}
	ctx := context.Background()
	st, err := h.js.Stream(ctx, streams.Events)
	if err != nil {
		t.Fatal(err)
	}
	starts := map[string]time.Time{}
	testutil.WaitFor(t, 2*time.Minute, func() bool {
		c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{envelope.UserEventsSubject("bench")}})
		if err != nil {
			return false
		}
		batch, err := c.FetchNoWait(n * 4)
		if err != nil {
			return false
		}
		for m := range batch.Messages() {
			_, snap, err := envelope.DecodeEvent(m.Data())
			if err != nil {
				continue
			}
			if _, ok := starts[snap.ID]; !ok {
				starts[snap.ID] = snap.UpdatedAt
			}
		}
		return len(starts) == n
	}, "not every scheduled job started")
	delays := make([]time.Duration, 0, n)
	for id, at := range starts {
		d := at.Sub(runAt)
		if d < -5*time.Millisecond {
			t.Errorf("job %s started %v early", id, -d)
		}
		delays = append(delays, d)
	}
	slices.Sort(delays)
	q := func(p float64) time.Duration { return delays[int(p*float64(len(delays)-1))] }
	t.Logf("%d jobs due at the same second, one processor: start delay p50 %v p99 %v max %v", n, q(.5), q(.99), delays[len(delays)-1])
}
