package cogfake

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// The default model's inputs (all optional; unknown keys are dropped, as
// coglet does):
//
//	duration_ms  int     how long the prediction runs (0..600000)
//	steps        int     progress lines logged ("NN%"), evenly spaced (0..1000)
//	fail         string  end "failed" with this error message
//	output       any     the output (default a data: URL, see output_bytes)
//	output_bytes int     size of the default data:text/plain output (default 16)
type defaultInput struct {
	DurationMS  int64           `json:"duration_ms"`
	Steps       int             `json:"steps"`
	Fail        string          `json:"fail"`
	Output      json.RawMessage `json:"output"`
	OutputBytes *int            `json:"output_bytes"`
}

func parseDefault(input map[string]json.RawMessage) (defaultInput, error) {
	var in defaultInput
	for _, k := range []struct {
		name string
		dst  any
	}{{"duration_ms", &in.DurationMS}, {"steps", &in.Steps}, {"fail", &in.Fail}, {"output_bytes", &in.OutputBytes}} {
		if v, ok := input[k.name]; ok {
			if err := json.Unmarshal(v, k.dst); err != nil {
				return in, &InputError{Field: k.name, Msg: "wrong type: " + err.Error()}
			}
		}
	}
	in.Output = input["output"]
	switch {
	case in.DurationMS < 0 || in.DurationMS > 600000:
		return in, &InputError{Field: "duration_ms", Msg: "must be within 0..600000"}
	case in.Steps < 0 || in.Steps > 1000:
		return in, &InputError{Field: "steps", Msg: "must be within 0..1000"}
	case in.OutputBytes != nil && (*in.OutputBytes < 0 || *in.OutputBytes > 4<<20):
		return in, &InputError{Field: "output_bytes", Msg: "must be within 0..4194304"}
	}
	return in, nil
}

// DefaultValidate checks the default model's inputs.
func DefaultValidate(input map[string]json.RawMessage, _ map[string]string) error {
	_, err := parseDefault(input)
	return err
}

// DefaultPredict is the default model (see the input list above). Its
// default output is a data: URL, the way Cog returns a file output.
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
			r.Log(fmt.Sprintf("%d%%", 100*i/steps))
		}
	}
	if in.Fail != "" {
		return nil, &FailedError{Msg: in.Fail}
	}
	if in.Output != nil {
		return in.Output, nil
	}
	return json.Marshal(DataURL(r.ID, in.OutputBytes))
}

// DataURL is the default model's output for prediction id: n bytes (default
// 16) of lower-case letters derived from id, as data:text/plain;base64,...
// (a type the outputs allowlist takes, so the output is kept like a
// model's file).
func DataURL(id string, n *int) string {
	size := 16
	if n != nil {
		size = *n
	}
	b := make([]byte, size)
	for i := range b {
		b[i] = 'a' + (id[i%max(len(id), 1)]^byte(i))%26
	}
	return "data:text/plain;base64," + base64.StdEncoding.EncodeToString(b)
}

// Context keys the cog provider sends in the prediction's context (Cog
// passes it to the model as current_scope().context).
const (
	ContextJob     = "beamline_job"
	ContextAttempt = "beamline_attempt"
)

// SimModel returns Validate and Predict functions that run the sim
// provider on the prediction's input (its "sim" key, see provider.NewSim),
// with the attempt and job taken from the prediction's context. It lets the
// provider conformance suite drive a Cog server: a retryable sim failure or
// a panic ends the prediction "failed", a hang runs until cancelled, and an
// attempt the sim would fail terminally (invalid input.sim, "fail":
// "terminal") is refused with 422 like an input the model rejects.
func SimModel() (validate func(map[string]json.RawMessage, map[string]string) error,
	predict func(context.Context, *Run) (json.RawMessage, error)) {
	sim, _ := provider.NewSim(provider.SimConfig{})
	req := func(input map[string]json.RawMessage, c map[string]string, progress func(int)) provider.Request {
		raw, _ := json.Marshal(input)
		attempt, _ := strconv.Atoi(c[ContextAttempt])
		return provider.Request{
			Job:     envelope.Job{ID: c[ContextJob], Kind: "image", Input: raw},
			Attempt: attempt, Progress: progress,
		}
	}
	validate = func(input map[string]json.RawMessage, c map[string]string) error {
		rq := req(input, c, nil)
		if err := provider.SimRefusal(rq); err != nil {
			return &InputError{Field: "sim", Msg: err.Error()}
		}
		return nil
	}
	predict = func(ctx context.Context, r *Run) (json.RawMessage, error) {
		rq := req(r.Input, r.Context, func(pct int) { r.Log(fmt.Sprintf("%d%%", pct)) })
		rq.Preview = r.Output // a sim image's previews are the outputs so far
		out, err := sim.Call(ctx, rq)
		if err != nil {
			return nil, &FailedError{Msg: err.Error()}
		}
		return out, nil
	}
	return validate, predict
}
