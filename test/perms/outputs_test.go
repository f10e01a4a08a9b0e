package perms

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/test/chaos/kit"
)

// The processor creates the outputs bucket and writes outputs (a rerun
// replaces one, which purges the old chunks); ingest reads them (info, the
// whole object, ranges: direct gets only) through its API — each with its
// own user, without one violation — and ingest can neither write one nor
// create a consumer on the bucket's stream.
func TestOutputsWithLeastPrivilege(t *testing.T) {
	p := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := outputs.CreateStore(ctx, p.processor.js, outputs.StoreConfig{TTL: time.Hour})
	if err != nil {
		t.Fatalf("processor creates the bucket: %v (violations %v)", err, p.processor.rec.violations())
	}
	sub, err := kit.Submit(ctx, &http.Client{Timeout: 10 * time.Second}, p.ingestURL, p.token, "", kit.SimJob("image", map[string]any{"steps": 1}))
	if err != nil || sub.Status != http.StatusAccepted {
		t.Fatalf("submit: %v %d", err, sub.Status)
	}
	id := sub.Snapshot.ID
	data := bytes.Repeat([]byte("beamline"), 40<<10) // 320 KiB, three chunks
	for i := range data {
		data[i] += byte(i / 4096) // offsets show
	}
	for range 2 {
		if _, err := st.Put(ctx, outputs.Key(id, "0.png"), "image/png", bytes.NewReader(data)); err != nil {
			t.Fatalf("processor puts an output: %v (violations %v)", err, p.processor.rec.violations())
		}
	}
	for _, rng := range []string{"", "bytes=200000-200009", "bytes=-10", "bytes=131070-131073"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.ingestURL+"/v1/jobs/"+id+"/outputs/0.png", nil)
		req.Header.Set("Authorization", "Bearer "+p.token)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := map[string][]byte{"": data, "bytes=200000-200009": data[200000:200010], "bytes=-10": data[len(data)-10:],
			"bytes=131070-131073": data[131070:131074]}[rng]
		if resp.StatusCode/100 != 2 || !bytes.Equal(b, want) {
			t.Fatalf("ingest serves the output (Range %q): %d, %d bytes (violations %v)", rng, resp.StatusCode, len(b), p.ingest.rec.violations())
		}
	}
	p.noViolations(t)

	short, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if _, err := p.ingest.js.CreateOrUpdateConsumer(short, "OBJ_outputs", jetstream.ConsumerConfig{}); err == nil {
		t.Fatal("ingest created a consumer on OBJ_outputs")
	}
	ro, err := outputs.OpenStore(ctx, p.ingest.js)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel3 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel3()
	if _, err := ro.Put(short, outputs.Key(id, "1.png"), "image/png", bytes.NewReader([]byte("x"))); err == nil {
		t.Fatal("ingest wrote an output")
	}
}
