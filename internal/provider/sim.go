package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// Limits of input.sim. Values beyond them are invalid (terminal).
const (
	// MaxSimDuration is the longest duration_ms a job may ask for.
	MaxSimDuration = 10 * time.Minute
	// MaxSimSteps is the largest number of progress reports.
	MaxSimSteps = 1000
)

// SimConfig configures the simulated provider. The zero value is ready to
// use.
type SimConfig struct {
	// Sleep waits for d or until ctx is done, whichever comes first, and
	// returns ctx.Err() in the latter case. Tests inject it to make time pass
	// instantly. Default: a time.Timer raced against ctx.Done().
	Sleep func(ctx context.Context, d time.Duration) error
	// DefaultDuration is the duration of a job whose input.sim has no
	// duration_ms (or that has no input.sim at all). Default 0: such jobs
	// return at once, without a timer.
	DefaultDuration time.Duration
	// CallLog, when set, receives one line "<job id> <attempt>\n" per Call,
	// written (one Write) before Call does anything else, even for a ctx
	// that is already done. It is a test hook: test/faults counts how often
	// each job reached its provider across processor processes (cmd/processor
	// appends to the file named by $BEAMLINE_SIM_CALL_LOG). A write error is
	// ignored: the log must never change what a call does.
	CallLog io.Writer
}

// EnvSimCallLog names the file cmd/processor appends SimConfig.CallLog
// lines to. Unset (the default): no log.
const EnvSimCallLog = "BEAMLINE_SIM_CALL_LOG"

// NewSim returns the simulated provider, "sim". It does no real work: each
// job's input.sim says how long a call takes, how it reports progress and how
// it fails. Knobs (all optional):
//
//	{"sim": {
//	  "duration_ms": 1500,   // total time of a succeeding attempt (default SimConfig.DefaultDuration)
//	  "steps":       5,      // progress reports spread evenly over the duration: 100*i/steps, i=1..steps
//	  "panic_times": 1,      // attempts 1..panic_times panic (a real panic; the processor's Boundary contains it)
//	  "hang_times":  1,      // the next hang_times attempts block until ctx is done, then return ctx.Err() (retryable)
//	  "fail_times":  2,      // the next fail_times attempts fail with a retryable error
//	  "fail":        "terminal", // after that, fail with a terminal error instead of succeeding
//	  "image":       true,   // draw a real picture (SimPNG): each progress step but the last hands Request.Preview a PNG
//	                         // that sharpens with progress, and the result's url is the final PNG as a data: URL
//	  "result":      {...}   // the JSON result on success (default {"url":"sim://<kind>/<job>","attempt":N})
//	}}
//
// The attempt number is Request.Attempt (1-based, the delivery count; values
// below 1 count as 1). Panics, hangs and failures happen at the start of the
// attempt, before any duration or progress: only the attempt that succeeds
// (or the final terminal one) runs the duration and reports progress.
//
// An input.sim that is not an object, has an unknown knob, a wrong type, a
// negative number, steps over MaxSimSteps or a duration over MaxSimDuration
// fails terminally with an error wrapping ErrInvalidSim. A ctx that ends
// during the duration makes Call return ctx.Err() wrapped retryable.
//
// A job without input.sim (the benchmark's no-op job) returns at once: no
// timer, no parsing beyond a byte search, one allocation for the result.
func NewSim(cfg SimConfig) (Provider, error) {
	if cfg.DefaultDuration < 0 || cfg.DefaultDuration > MaxSimDuration {
		return nil, fmt.Errorf("%w: sim default duration must be within 0..%s, got %s",
			ErrInvalidConfig, MaxSimDuration, cfg.DefaultDuration)
	}
	p := &simProvider{sleep: cfg.Sleep, defaultDuration: cfg.DefaultDuration, callLog: cfg.CallLog}
	if p.sleep == nil {
		p.sleep = flow.Sleep
	}
	return p, nil
}

type simProvider struct {
	sleep           func(ctx context.Context, d time.Duration) error
	defaultDuration time.Duration
	callLog         io.Writer
}

var _ Provider = (*simProvider)(nil)

func (p *simProvider) Name() string { return "sim" }

// simSpec is input.sim. Pointers tell "absent" from zero where it matters.
type simSpec struct {
	DurationMS *int64          `json:"duration_ms"`
	Steps      int             `json:"steps"`
	FailTimes  int             `json:"fail_times"`
	Fail       string          `json:"fail"`
	PanicTimes int             `json:"panic_times"`
	HangTimes  int             `json:"hang_times"`
	Image      bool            `json:"image"`
	Result     json.RawMessage `json:"result"`
}

var simKey = []byte(`"sim"`)

func (p *simProvider) Call(ctx context.Context, req Request) (json.RawMessage, error) {
	if p.callLog != nil {
		_, _ = p.callLog.Write([]byte(req.Job.ID + " " + strconv.Itoa(req.Attempt) + "\n"))
	}
	if err := ctx.Err(); err != nil {
		return nil, flow.Retryable(fmt.Errorf("sim: %w", err), 0)
	}
	attempt := max(req.Attempt, 1)

	// Fast path: no input.sim at all (bytes.Contains is a cheap guard; a
	// false positive such as a prompt mentioning "sim" just takes the slow
	// path and finds no knob).
	if !bytes.Contains(req.Job.Input, simKey) {
		if p.defaultDuration > 0 {
			if err := p.run(ctx, p.defaultDuration, 0, req.Progress); err != nil {
				return nil, err
			}
		}
		return defaultSimResult(req.Job.Kind, req.Job.ID, attempt), nil
	}

	spec, err := parseSim(req.Job.Input)
	if err != nil {
		return nil, flow.Terminal(err)
	}
	n := attempt
	if n <= spec.PanicTimes {
		panic(fmt.Sprintf("sim: simulated panic (job %s attempt %d, panic_times %d)", req.Job.ID, attempt, spec.PanicTimes))
	}
	n -= spec.PanicTimes
	if n <= spec.HangTimes {
		<-ctx.Done()
		return nil, flow.Retryable(fmt.Errorf("sim: simulated hang (attempt %d): %w", attempt, ctx.Err()), 0)
	}
	n -= spec.HangTimes
	if n <= spec.FailTimes {
		return nil, flow.Retryable(fmt.Errorf("%w: transient (attempt %d, fail_times %d)", ErrSimulated, attempt, spec.FailTimes), 0)
	}

	d := p.defaultDuration
	if spec.DurationMS != nil {
		d = time.Duration(*spec.DurationMS) * time.Millisecond
	}
	progress := req.Progress
	var seed uint64
	if spec.Image {
		seed = SimImageSeed(req.Job.ID, req.Job.Input)
		progress = imageProgress(seed, req.Progress, req.Preview)
	}
	if err := p.run(ctx, d, spec.Steps, progress); err != nil {
		return nil, err
	}
	if spec.Fail == "terminal" {
		return nil, flow.Terminal(fmt.Errorf("%w: terminal (attempt %d)", ErrSimulated, attempt))
	}
	if spec.Result != nil {
		return spec.Result, nil
	}
	if spec.Image {
		b, err := json.Marshal(struct {
			URL     string `json:"url"`
			Attempt int    `json:"attempt"`
		}{SimPNGDataURL(seed, 100), attempt})
		return b, err
	}
	return defaultSimResult(req.Job.Kind, req.Job.ID, attempt), nil
}

// run spends d, reporting progress steps times, evenly spaced.
func (p *simProvider) run(ctx context.Context, d time.Duration, steps int, progress func(int)) error {
	if steps == 0 {
		if d > 0 {
			if err := p.sleep(ctx, d); err != nil {
				return flow.Retryable(fmt.Errorf("sim: %w", err), 0)
			}
		}
		return nil
	}
	var elapsed time.Duration
	for i := 1; i <= steps; i++ {
		next := d * time.Duration(i) / time.Duration(steps)
		if step := next - elapsed; step > 0 {
			if err := p.sleep(ctx, step); err != nil {
				return flow.Retryable(fmt.Errorf("sim: %w", err), 0)
			}
		}
		elapsed = next
		if progress != nil {
			progress(100 * i / steps)
		}
	}
	return nil
}

// imageProgress hands preview, before each progress report short of 100,
// the picture at that progress (a JSON string, a data:image/png URL). The
// PNG is only drawn when someone takes it.
func imageProgress(seed uint64, progress func(int), preview func(json.RawMessage)) func(int) {
	if preview == nil {
		return progress
	}
	return func(pct int) {
		if pct < 100 {
			preview(json.RawMessage(`"` + SimPNGDataURL(seed, pct) + `"`))
		}
		if progress != nil {
			progress(pct)
		}
	}
}

// parseSim extracts and validates input.sim. A missing or null sim is the
// zero spec.
func parseSim(input json.RawMessage) (simSpec, error) {
	var spec simSpec
	var outer struct {
		Sim json.RawMessage `json:"sim"`
	}
	if err := json.Unmarshal(input, &outer); err != nil {
		return spec, fmt.Errorf("%w: input is not a JSON object: %v", ErrInvalidSim, err)
	}
	raw := bytes.TrimSpace(outer.Sim)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return spec, nil
	}
	if raw[0] != '{' {
		return spec, fmt.Errorf("%w: must be a JSON object", ErrInvalidSim)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return spec, fmt.Errorf("%w: %q must be %s, got %s", ErrInvalidSim, te.Field, wantType(te.Type), te.Value)
		}
		return spec, fmt.Errorf("%w: %v", ErrInvalidSim, err)
	}
	switch {
	case spec.DurationMS != nil && *spec.DurationMS < 0:
		return spec, fmt.Errorf("%w: \"duration_ms\" must not be negative", ErrInvalidSim)
	case spec.DurationMS != nil && *spec.DurationMS > MaxSimDuration.Milliseconds():
		return spec, fmt.Errorf("%w: \"duration_ms\" must be at most %d (%s)", ErrInvalidSim, MaxSimDuration.Milliseconds(), MaxSimDuration)
	case spec.Steps < 0 || spec.Steps > MaxSimSteps:
		return spec, fmt.Errorf("%w: \"steps\" must be within 0..%d", ErrInvalidSim, MaxSimSteps)
	case spec.FailTimes < 0:
		return spec, fmt.Errorf("%w: \"fail_times\" must not be negative", ErrInvalidSim)
	case spec.PanicTimes < 0:
		return spec, fmt.Errorf("%w: \"panic_times\" must not be negative", ErrInvalidSim)
	case spec.HangTimes < 0:
		return spec, fmt.Errorf("%w: \"hang_times\" must not be negative", ErrInvalidSim)
	case spec.Fail != "" && spec.Fail != "terminal":
		return spec, fmt.Errorf("%w: \"fail\" must be \"terminal\" or absent, got %q", ErrInvalidSim, spec.Fail)
	}
	return spec, nil
}

func wantType(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "a non-negative integer"
	case reflect.String:
		return "a string"
	default:
		return t.String()
	}
}

// defaultSimResult is {"url":"sim://<kind>/<job>","attempt":N}, built with a
// single allocation (ids are validated tokens; anything else is escaped).
func defaultSimResult(kind, id string, attempt int) json.RawMessage {
	if !plainToken(kind) || !plainToken(id) {
		b, _ := json.Marshal(struct {
			URL     string `json:"url"`
			Attempt int    `json:"attempt"`
		}{"sim://" + kind + "/" + id, attempt})
		return b
	}
	const head, mid, tail = `{"url":"sim://`, `","attempt":`, `}`
	b := make([]byte, 0, len(head)+len(kind)+1+len(id)+len(mid)+20+len(tail))
	b = append(b, head...)
	b = append(b, kind...)
	b = append(b, '/')
	b = append(b, id...)
	b = append(b, mid...)
	b = strconv.AppendInt(b, int64(attempt), 10)
	b = append(b, tail...)
	return b
}

// plainToken reports whether s needs no escaping inside a JSON string.
func plainToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// drySim is a sim provider that does not wait: it tells at once how a call
// ends.
var drySim = sync.OnceValue(func() Provider {
	p, _ := NewSim(SimConfig{Sleep: func(context.Context, time.Duration) error { return nil }})
	return p
})

// SimRefusal is the terminal error a sim call of rq ends in (an invalid
// input.sim, "fail": "terminal"), nil when it ends otherwise or when this
// attempt panics or hangs at run time. The fake model servers (cogfake,
// replicatefake) refuse such an input with 422, as a model refuses an
// input its schema rejects.
func SimRefusal(rq Request) (refusal error) {
	var loose struct {
		Sim struct {
			PanicTimes int `json:"panic_times"`
			HangTimes  int `json:"hang_times"`
		} `json:"sim"`
	}
	if json.Unmarshal(rq.Job.Input, &loose) == nil && rq.Attempt <= loose.Sim.PanicTimes+loose.Sim.HangTimes {
		return nil // this attempt panics or hangs at run time
	}
	defer func() {
		if recover() != nil {
			refusal = nil
		}
	}()
	if _, err := drySim().Call(context.Background(), rq); flow.IsTerminal(err) {
		return err
	}
	return nil
}
