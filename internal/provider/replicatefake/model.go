package replicatefake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// The default model's inputs (all optional; unknown keys are ignored):
//
//	starting_ms  int     how long the prediction stays "starting" (0..600000)
//	duration_ms  int     how long it stays "processing" (0..600000)
//	steps        int     progress lines logged ("NN%"), evenly spaced (0..1000)
//	fail         string  end "failed" with this error message
//	output       any     the output (default: a file URL, see files)
//	files        int     number of output files (default 1); more than one gives a list of URLs
//	file_bytes   int     size of each file (default 16, at most 4 MiB), made by FileBytes
type defaultInput struct {
	StartingMS int64           `json:"starting_ms"`
	DurationMS int64           `json:"duration_ms"`
	Steps      int             `json:"steps"`
	Fail       string          `json:"fail"`
	Output     json.RawMessage `json:"output"`
	Files      *int            `json:"files"`
	FileBytes  *int            `json:"file_bytes"`
}

func parseDefault(input map[string]json.RawMessage) (defaultInput, error) {
	var in defaultInput
	for _, k := range []struct {
		name string
		dst  any
	}{
		{"starting_ms", &in.StartingMS}, {"duration_ms", &in.DurationMS}, {"steps", &in.Steps},
		{"fail", &in.Fail}, {"files", &in.Files}, {"file_bytes", &in.FileBytes},
	} {
		if v, ok := input[k.name]; ok {
			if err := json.Unmarshal(v, k.dst); err != nil {
				return in, &InputError{Field: k.name, Msg: "wrong type: " + err.Error()}
			}
		}
	}
	in.Output = input["output"]
	switch {
	case in.StartingMS < 0 || in.StartingMS > 600000:
		return in, &InputError{Field: "starting_ms", Msg: "must be within 0..600000"}
	case in.DurationMS < 0 || in.DurationMS > 600000:
		return in, &InputError{Field: "duration_ms", Msg: "must be within 0..600000"}
	case in.Steps < 0 || in.Steps > 1000:
		return in, &InputError{Field: "steps", Msg: "must be within 0..1000"}
	case in.Files != nil && (*in.Files < 0 || *in.Files > 16):
		return in, &InputError{Field: "files", Msg: "must be within 0..16"}
	case in.FileBytes != nil && (*in.FileBytes < 0 || *in.FileBytes > 4<<20):
		return in, &InputError{Field: "file_bytes", Msg: "must be within 0..4194304"}
	}
	return in, nil
}

// DefaultValidate checks the default model's inputs.
func DefaultValidate(input map[string]json.RawMessage) error {
	_, err := parseDefault(input)
	return err
}

// DefaultStartDelay is the input's starting_ms.
func DefaultStartDelay(input map[string]json.RawMessage) time.Duration {
	in, _ := parseDefault(input)
	return time.Duration(in.StartingMS) * time.Millisecond
}

// DefaultKey is the input's "beamline_job" string when present, else the
// input as JSON (keys sorted).
func DefaultKey(input map[string]json.RawMessage) string {
	var job string
	if json.Unmarshal(input["beamline_job"], &job) == nil && job != "" {
		return job
	}
	b, _ := json.Marshal(input)
	return string(b)
}

// DefaultPredict is the default model (see the input list above). Its
// default output is one file URL served by the fake, the way Replicate
// returns an image.
func DefaultPredict(ctx context.Context, r *Run) (json.RawMessage, error) {
	in, err := parseDefault(r.Input)
	if err != nil {
		return nil, err
	}
	d := time.Duration(in.DurationMS) * time.Millisecond
	steps := max(in.Steps, 1)
	for i := 1; i <= steps; i++ {
		if err := flow.Sleep(ctx, d/time.Duration(steps)); err != nil {
			return nil, err
		}
		if in.Steps > 0 {
			r.Log(fmt.Sprintf("%d%%|%d/%d", 100*i/steps, i, steps))
		}
	}
	if in.Fail != "" {
		return nil, errors.New(in.Fail)
	}
	if in.Output != nil {
		return in.Output, nil
	}
	n, size := 1, 16
	if in.Files != nil {
		n = *in.Files
	}
	if in.FileBytes != nil {
		size = *in.FileBytes
	}
	urls := make([]string, n)
	for i := range urls {
		urls[i] = r.File(fmt.Sprintf("out-%d.txt", i), "text/plain", FileBytes(r.ID, i, size))
	}
	if n == 1 {
		return json.Marshal(urls[0])
	}
	return json.Marshal(urls)
}

// FileBytes is the content of the default model's output file i of
// prediction id: n lower-case letters derived from both, served as
// text/plain (a type the outputs allowlist takes).
func FileBytes(id string, i, n int) []byte {
	b := make([]byte, n)
	for k := range b {
		b[k] = 'a' + (id[k%max(len(id), 1)]^byte(k)^byte(i*31))%26
	}
	return b
}

// Input keys the conformance test adds to each prediction's input
// (provider.ReplicateConfig.ExtraInput) so that SimModel knows the job and
// the attempt; Replicate itself has no per-prediction context.
const (
	InputJob     = "beamline_job"
	InputAttempt = "beamline_attempt"
)

// SimModel returns Validate and Predict functions that run the sim
// provider on the prediction's input (its "sim" key, see provider.NewSim),
// with the job and attempt from InputJob and InputAttempt. It lets the
// provider conformance suite drive the fake: a retryable sim failure or a
// panic ends the prediction "failed", a hang runs until cancelled, and an
// attempt the sim would fail terminally is refused with 422 like an input
// the model rejects.
func SimModel() (validate func(map[string]json.RawMessage) error,
	predict func(context.Context, *Run) (json.RawMessage, error)) {
	sim, _ := provider.NewSim(provider.SimConfig{})
	req := func(input map[string]json.RawMessage, progress func(int)) provider.Request {
		var job, attempt string
		_ = json.Unmarshal(input[InputJob], &job)
		_ = json.Unmarshal(input[InputAttempt], &attempt)
		n, _ := strconv.Atoi(attempt)
		in := map[string]json.RawMessage{}
		if v, ok := input["sim"]; ok {
			in["sim"] = v
		}
		raw, _ := json.Marshal(in)
		return provider.Request{Job: envelope.Job{ID: job, Kind: "image", Input: raw}, Attempt: n, Progress: progress}
	}
	validate = func(input map[string]json.RawMessage) error {
		rq := req(input, nil)
		if err := provider.SimRefusal(rq); err != nil {
			return &InputError{Field: "sim", Msg: err.Error()}
		}
		return nil
	}
	predict = func(ctx context.Context, r *Run) (json.RawMessage, error) {
		rq := req(r.Input, func(pct int) { r.Log(fmt.Sprintf("%d%%", pct)) })
		rq.Preview = r.Output // a sim image's previews are the outputs so far
		out, err := sim.Call(ctx, rq)
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	return validate, predict
}
