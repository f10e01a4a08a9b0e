package processor

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
)

// resultProvider answers every call with its job's input "result".
type resultProvider struct{}

func (resultProvider) Name() string { return "result" }
func (resultProvider) Call(_ context.Context, req provider.Request) (json.RawMessage, error) {
	var in struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(req.Job.Input, &in); err != nil {
		return nil, err
	}
	return in.Result, nil
}

func outputsConfig(t *testing.T, e *env) (Config, *outputs.Store) {
	cfg := baseConfig(t)
	cfg.Providers["result"] = resultProvider{}
	cfg.DefaultProvider = "result"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := outputs.CreateStore(ctx, e.js, outputs.StoreConfig{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	f, err := outputs.NewFetcher(outputs.FetchConfig{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	cfg.Outputs = &outputs.Keeper{Store: st, Fetcher: f}
	return cfg, st
}

func resultJob(result string) envelope.Job {
	j := newJob("alice", "image", envelope.PriorityNormal, nil)
	j.Input = json.RawMessage(`{"result":` + result + `}`)
	return j
}

// A successful result's output URLs are stored and the stored result
// names them; a result with none is stored as the provider gave it.
func TestOutputsAreKeptBeforeTheOutcome(t *testing.T) {
	e := newEnv(t)
	cfg, st := outputsConfig(t, e)
	r := e.start(cfg)

	png := bytes.Repeat([]byte{0x89, 'P', 'N', 'G', 1, 2, 3}, 1000)
	j := resultJob(`{"images":["data:image/png;base64,` + base64.StdEncoding.EncodeToString(png) + `"]}`)
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	var res struct {
		Images []outputs.Output `json:"images"`
	}
	if err := json.Unmarshal(s.Result, &res); err != nil || len(res.Images) != 1 {
		t.Fatalf("result %s: %v", s.Result, err)
	}
	if o := res.Images[0]; o.Output != "0.png" || o.URL != "/v1/jobs/"+j.ID+"/outputs/0.png" || o.Size != int64(len(png)) {
		t.Fatalf("output %+v", o)
	}
	obj, err := st.Open(context.Background(), outputs.Key(j.ID, "0.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if b, err := io.ReadAll(obj); err != nil || !bytes.Equal(b, png) {
		t.Fatalf("stored output differs (%d bytes, %v)", len(b), err)
	}
	if v := counterValue(t, r, "beamline_provider_output_bytes_total", map[string]string{"provider": "result"}); v != float64(len(png)) {
		t.Fatalf("output bytes stored %v, want %d", v, len(png))
	}

	plain := resultJob(`{"text":"no URL here","z":1.50,"a":1}`)
	e.submit(plain)
	s = e.waitStatus(plain.ID, envelope.StatusSucceeded, 10*time.Second)
	if string(s.Result) != `{"text":"no URL here","z":1.50,"a":1}` {
		t.Fatalf("result changed: %s", s.Result)
	}
}

// An output that can never be stored fails the job with the reason.
func TestForbiddenOutputFailsTheJob(t *testing.T) {
	e := newEnv(t)
	cfg, _ := outputsConfig(t, e)
	e.start(cfg)
	j := resultJob(`"https://127.0.0.1:1/secret.png"`)
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusFailed, 10*time.Second)
	if s.Attempt != 1 || !strings.Contains(s.Error, "address not allowed") || len(s.Result) != 0 {
		t.Fatalf("snapshot %+v", s)
	}
}

// Outputs apply to the listed providers only: another provider's result
// keeps its URLs as they are.
func TestOutputsOfOtherProvidersAreLeftAlone(t *testing.T) {
	e := newEnv(t)
	cfg, _ := outputsConfig(t, e)
	cfg.OutputProviders = []string{"cog", "replicate"}
	e.start(cfg)
	j := resultJob(`{"link":"data:,hello"}`)
	e.submit(j)
	s := e.waitStatus(j.ID, envelope.StatusSucceeded, 10*time.Second)
	if string(s.Result) != `{"link":"data:,hello"}` {
		t.Fatalf("result %s", s.Result)
	}
}
