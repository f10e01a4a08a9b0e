package processor

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider/replicatefake"
	"github.com/beamline/beamline/pkg/envelope"
)

// TestRemoteTelemetry: a job whose first Replicate prediction fails and
// whose second succeeds ends with its remote telemetry in its snapshot
// (provider, 2 starts, the time its last prediction was queued at
// Replicate and its predict_time) and in the metrics (remote starts per
// job, queued and run time, await time, per provider and model).
func TestRemoteTelemetry(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	runs := map[string]int{}
	fake := replicatefake.New(replicatefake.Config{
		StartDelay: func(map[string]json.RawMessage) time.Duration { return 30 * time.Millisecond },
		Predict: func(ctx context.Context, r *replicatefake.Run) (json.RawMessage, error) {
			var job string
			_ = json.Unmarshal(r.Input[replicatefake.InputJob], &job)
			mu.Lock()
			runs[job]++
			n := runs[job]
			mu.Unlock()
			// The model works for 20 ms.
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if n == 1 {
				return nil, &replicatefake.InputError{Field: "prompt", Msg: "CUDA out of memory"}
			}
			return json.RawMessage(`"done"`), nil
		},
	})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	r := e.start(replicateConfig(t, srv.URL))
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 20*time.Second)
	rs := s.Remote
	if rs == nil {
		t.Fatalf("snapshot %+v has no remote telemetry", s)
	}
	if rs.Provider != "replicate:black-forest-labs/flux-schnell" || rs.Starts != 2 {
		t.Fatalf("remote %+v, want replicate:black-forest-labs/flux-schnell and 2 starts", *rs)
	}
	if rs.QueuedMS < 30 || rs.RunMS < 20 {
		t.Fatalf("remote %+v, want queued >= 30 ms and run >= 20 ms", *rs)
	}
	labels := map[string]string{"provider": "replicate", "model": "black-forest-labs/flux-schnell"}
	for name, want := range map[string]float64{
		"beamline_provider_remote_starts":  1, // one job ended
		"beamline_provider_queued_seconds": 2,
		"beamline_provider_run_seconds":    2,
		"beamline_provider_await_seconds":  2,
	} {
		if v := counterValue(t, r, name, labels); v != want {
			t.Errorf("%s: %v observations, want %v", name, v, want)
		}
	}
	// The one observation of remote starts is the 2.
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "beamline_provider_remote_starts" {
			if sum := mf.GetMetric()[0].GetHistogram().GetSampleSum(); sum != 2 {
				t.Errorf("remote starts sum %v, want 2", sum)
			}
		}
	}
}
