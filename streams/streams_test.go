package streams

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func decodeStrict(t *testing.T, name string, v any) {
	t.Helper()
	b, err := FS.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestStreamFiles(t *testing.T) {
	want := map[string]string{
		"jobs.json": Jobs, "events.json": Events, "dlq.json": DLQ, "kv_job_status.json": "KV_" + JobStatus,
		"webhooks.json": Webhooks, "jobindex.json": JobIndex, "scheduled.json": Scheduled,
	}
	files, err := fs.Glob(FS, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Fatalf("stream files = %v", files)
	}
	for _, f := range files {
		var c jetstream.StreamConfig
		decodeStrict(t, f, &c)
		if c.Name != want[f] {
			t.Errorf("%s names stream %q, want %q", f, c.Name, want[f])
		}
		// WEBHOOKS de-duplicates for longer than the 5 minutes a signed
		// delivery's timestamp is accepted, so a replay within them is
		// stored once.
		dup := 2 * time.Minute
		if f == "webhooks.json" {
			dup = 10 * time.Minute
		}
		if c.Storage != jetstream.FileStorage || c.Replicas != 1 || c.Duplicates != dup {
			t.Errorf("%s: storage %s replicas %d duplicates %v", f, c.Storage, c.Replicas, c.Duplicates)
		}
		if c.Description == "" {
			t.Errorf("%s has no description", f)
		}
	}
}

// Every processor consumer exists for the default kinds and priorities, and
// its name, filter and file name agree.
func TestConsumerFiles(t *testing.T) {
	files, err := fs.Glob(FS, "consumers/*.json")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		var c jetstream.ConsumerConfig
		decodeStrict(t, f, &c)
		name := strings.TrimSuffix(path.Base(f), ".json")
		seen[name] = true
		parts := strings.Split(name, "-")
		if len(parts) != 3 || parts[0] != "proc" {
			t.Errorf("%s: name is not proc-<priority>-<kind>", f)
			continue
		}
		// One filter: JOBS stores a job published to the queue's subject
		// under it too (jobs.json's subject transform), and one filter's
		// lookups cost a third of two filters' with a big backlog
		// (BENCHMARKS.md, run Y).
		q := "jobs." + parts[1] + "." + parts[2] + ".*"
		if c.Durable != name || c.FilterSubject != "" || len(c.FilterSubjects) != 1 || c.FilterSubjects[0] != q {
			t.Errorf("%s: durable %q filters %q %q, want [%s]", f, c.Durable, c.FilterSubject, c.FilterSubjects, q)
		}
		if c.AckPolicy != jetstream.AckExplicitPolicy || c.AckWait != 30*time.Second || c.MaxDeliver != -1 || c.MaxAckPending != 64 {
			t.Errorf("%s: %+v", f, c)
		}
	}
	for _, p := range []string{"high", "normal", "low"} {
		for _, k := range []string{"image", "video"} {
			if !seen["proc-"+p+"-"+k] {
				t.Errorf("no consumer file for %s %s", p, k)
			}
		}
	}
}
