package jsm_test

import (
	"testing"
	"time"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/streams"
)

// TestJobHandlesKV: the job_handles bucket needs job_status (its replicas
// follow it), keeps one value per job, and applying it twice is a no-op.
func TestJobHandlesKV(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	if _, err := jsm.JobHandles(ctx, js); err == nil {
		t.Fatal("JobHandles before ApplyStreams succeeded")
	}
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	kv, err := jsm.JobHandles(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jsm.JobHandles(ctx, js); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	if kv.Bucket() != streams.JobHandles {
		t.Fatalf("bucket = %q", kv.Bucket())
	}
	for _, v := range []string{`{"number":1}`, `{"number":1,"ended":true}`} {
		if _, err := kv.Put(ctx, "job-1", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 1 || st.Values() != 1 {
		t.Fatalf("history %d, values %d; want 1 and 1", st.History(), st.Values())
	}
	if e, err := kv.Get(ctx, "job-1"); err != nil || string(e.Value()) != `{"number":1,"ended":true}` {
		t.Fatalf("Get = %v %v", e, err)
	}
}

// TestApplyWebhooks: the WEBHOOKS stream needs job_status (its replicas
// follow it), applying it twice is a no-op, and what the nats CLI makes of
// streams/webhooks.json is what jsm makes (natscli_test.go adds the file
// with the others).
func TestApplyWebhooks(t *testing.T) {
	js := newJS(t)
	ctx := ctxT(t)
	if err := jsm.ApplyWebhooks(ctx, js); err == nil {
		t.Fatal("ApplyWebhooks before ApplyStreams succeeded")
	}
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := jsm.ApplyWebhooks(ctx, js); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, streams.Webhooks)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowDirect || cfg.Subjects[0] != "webhooks.*.*.*" || cfg.Duplicates < 5*time.Minute {
		t.Fatalf("WEBHOOKS = %+v", cfg)
	}
}
