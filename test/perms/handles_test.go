package perms

import (
	"context"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/jsm"
)

// TestJobHandlesAreTheProcessors: the job_handles bucket (the handles of
// remote work, streams/processor/) is applied, written and read by the
// processor with its own user, and by no other service.
func TestJobHandlesAreTheProcessors(t *testing.T) {
	s := startServer(t)
	proc := connect(t, s, "processor")
	proc.applyStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := jsm.JobHandles(ctx, proc.js)
	if err != nil {
		t.Fatalf("processor cannot apply job_handles: %v (violations %v)", err, proc.rec.violations())
	}
	if _, err := kv.Put(ctx, "j1", []byte(`{"provider":"cog","remote_id":"x","number":1}`)); err != nil {
		t.Fatalf("processor cannot write a handle: %v (violations %v)", err, proc.rec.violations())
	}
	if e, err := kv.Get(ctx, "j1"); err != nil || len(e.Value()) == 0 {
		t.Fatalf("processor cannot read a handle: %v (violations %v)", err, proc.rec.violations())
	}
	if v := proc.rec.violations(); len(v) > 0 {
		t.Fatalf("processor violations: %v", v)
	}

	for _, user := range []string{"ingest", "notifier"} {
		c := connect(t, s, user)
		refusedPublish(t, c, "$KV.job_handles.j1")
		jsCall(t, c, "read a handle", func(ctx context.Context) error {
			_, err := c.nc.Request("$JS.API.DIRECT.GET.KV_job_handles.$KV.job_handles.j1", nil, 500*time.Millisecond)
			return err
		})
		jsCall(t, c, "apply job_handles", func(ctx context.Context) error {
			_, err := jsm.JobHandles(ctx, c.js)
			return err
		})
	}
}
