package provider_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// sleepRecorder is an injected SimConfig.Sleep: time passes instantly and
// every wait is recorded.
type sleepRecorder struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleepRecorder) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleepRecorder) total() (n int, sum time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.waits {
		sum += w
	}
	return len(s.waits), sum
}

func simJob(input string) envelope.Job {
	return envelope.Job{ID: "j1", User: "u1", Kind: "image", Priority: "normal", Input: json.RawMessage(input)}
}

type outcome string

const (
	outPanic    outcome = "panic"
	outHang     outcome = "hang"
	outRetry    outcome = "retryable"
	outTerminal outcome = "terminal"
	outOK       outcome = "ok"
)

// attemptOutcome runs one attempt (that must not hang) and says what
// happened.
func attemptOutcome(t *testing.T, p provider.Provider, input string, attempt int) outcome {
	t.Helper()
	ctx := context.Background()
	var out outcome
	func() {
		defer func() {
			if recover() != nil {
				out = outPanic
			}
		}()
		_, err := p.Call(ctx, provider.Request{Job: simJob(input), Attempt: attempt})
		switch {
		case err == nil:
			out = outOK
		case flow.IsTerminal(err):
			out = outTerminal
		default:
			out = outRetry
		}
	}()
	return out
}

func TestSimAttemptOrder(t *testing.T) {
	p := newSim(t, provider.SimConfig{Sleep: (&sleepRecorder{}).sleep})
	input := `{"prompt":"a cat","sim":{"panic_times":2,"hang_times":1,"fail_times":2,"fail":"terminal"}}`
	want := []outcome{outPanic, outPanic, outHang, outRetry, outRetry, outTerminal, outTerminal}
	for i, w := range want {
		attempt := i + 1
		if w == outHang {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			_, err := p.Call(ctx, provider.Request{Job: simJob(input), Attempt: attempt})
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) || flow.IsTerminal(err) {
				t.Errorf("attempt %d = %v, want a retryable deadline exceeded (hang)", attempt, err)
			}
			continue
		}
		if got := attemptOutcome(t, p, input, attempt); got != w {
			t.Errorf("attempt %d = %s, want %s", attempt, got, w)
		}
	}
	// Without fail: "terminal" the attempt after the failures succeeds.
	if got := attemptOutcome(t, p, `{"sim":{"fail_times":3}}`, 4); got != outOK {
		t.Errorf("attempt 4 of fail_times 3 = %s, want ok", got)
	}
	if got := attemptOutcome(t, p, `{"sim":{"fail_times":3}}`, 3); got != outRetry {
		t.Errorf("attempt 3 of fail_times 3 = %s, want retryable", got)
	}
}

func TestSimTransientErrorWrapsErrSimulated(t *testing.T) {
	p := newSim(t, provider.SimConfig{})
	_, err := p.Call(context.Background(), provider.Request{Job: simJob(`{"sim":{"fail_times":1}}`), Attempt: 1})
	if !errors.Is(err, provider.ErrSimulated) || flow.IsTerminal(err) {
		t.Fatalf("err = %v, want retryable ErrSimulated", err)
	}
	_, err = p.Call(context.Background(), provider.Request{Job: simJob(`{"sim":{"fail":"terminal"}}`), Attempt: 1})
	if !errors.Is(err, provider.ErrSimulated) || !flow.IsTerminal(err) {
		t.Fatalf("err = %v, want terminal ErrSimulated", err)
	}
}

func TestSimInvalidInput(t *testing.T) {
	p := newSim(t, provider.SimConfig{})
	for _, tc := range []struct{ input, msg string }{
		{`{"sim":{"fail_times":"2"}}`, `"fail_times" must be a non-negative integer, got string`},
		{`{"sim":{"duration_ms":1.5}}`, `"duration_ms" must be a non-negative integer`},
		{`{"sim":{"duration_ms":-1}}`, `"duration_ms" must not be negative`},
		{`{"sim":{"duration_ms":600001}}`, `"duration_ms" must be at most 600000`},
		{`{"sim":{"steps":-1}}`, `"steps" must be within 0..1000`},
		{`{"sim":{"steps":1001}}`, `"steps" must be within 0..1000`},
		{`{"sim":{"fail_times":-1}}`, `"fail_times" must not be negative`},
		{`{"sim":{"panic_times":-1}}`, `"panic_times" must not be negative`},
		{`{"sim":{"hang_times":-2}}`, `"hang_times" must not be negative`},
		{`{"sim":{"fail":"yes"}}`, `"fail" must be "terminal" or absent`},
		{`{"sim":{"fail":1}}`, `"fail" must be a string`},
		{`{"sim":{"fail_time":1}}`, `unknown field "fail_time"`},
		{`{"sim":"fast"}`, `must be a JSON object`},
		{`{"sim":{}`, `input is not a JSON object`},
	} {
		_, err := p.Call(context.Background(), provider.Request{Job: simJob(tc.input), Attempt: 1})
		if !errors.Is(err, provider.ErrInvalidSim) || !flow.IsTerminal(err) {
			t.Errorf("%s: err = %v, want terminal ErrInvalidSim", tc.input, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %q, want it to mention %q", tc.input, err, tc.msg)
		}
	}
}

func TestSimValidEdgeCases(t *testing.T) {
	p := newSim(t, provider.SimConfig{Sleep: (&sleepRecorder{}).sleep})
	for _, input := range []string{
		``, `{}`, `{"sim":null}`, `{"sim":{}}`, `{"sim":{"duration_ms":600000}}`,
		`{"prompt":"simulate a sim"}`, `{"sim":{"fail":""}}`,
	} {
		if _, err := p.Call(context.Background(), provider.Request{Job: simJob(input), Attempt: 1}); err != nil {
			t.Errorf("%q: %v", input, err)
		}
	}
}

func TestSimDefaultResult(t *testing.T) {
	p := newSim(t, provider.SimConfig{})
	for _, input := range []string{``, `{"sim":{"fail_times":1}}`} {
		out, err := p.Call(context.Background(), provider.Request{Job: simJob(input), Attempt: 2})
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"url":"sim://image/j1","attempt":2}`; string(out) != want {
			t.Errorf("%q: result = %s, want %s", input, out, want)
		}
	}
	// Odd ids are still encoded as valid JSON.
	j := simJob(``)
	j.ID = `a"b\c`
	out, err := p.Call(context.Background(), provider.Request{Job: j})
	if err != nil || !json.Valid(out) || !strings.Contains(string(out), `"attempt":1`) {
		t.Errorf("odd id: result = %s, %v", out, err)
	}
}

func TestSimGivenResult(t *testing.T) {
	p := newSim(t, provider.SimConfig{})
	for _, tc := range []struct{ input, want string }{
		{`{"sim":{"result":{"url":"s3://b/k.png"}}}`, `{"url":"s3://b/k.png"}`},
		{`{"sim":{"result":[1,2,3]}}`, `[1,2,3]`},
		{`{"sim":{"result":null}}`, `null`},
	} {
		out, err := p.Call(context.Background(), provider.Request{Job: simJob(tc.input), Attempt: 1})
		if err != nil || string(out) != tc.want {
			t.Errorf("%s: = %s, %v; want %s", tc.input, out, err, tc.want)
		}
	}
}

func TestSimDurationAndSteps(t *testing.T) {
	rec := &sleepRecorder{}
	p := newSim(t, provider.SimConfig{Sleep: rec.sleep})
	var got []int
	_, err := p.Call(context.Background(), provider.Request{
		Job:      simJob(`{"sim":{"duration_ms":1000,"steps":3}}`),
		Attempt:  1,
		Progress: func(pct int) { got = append(got, pct) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{33, 66, 100}; !equalInts(got, want) {
		t.Errorf("progress = %v, want %v", got, want)
	}
	if n, sum := rec.total(); n != 3 || sum != time.Second {
		t.Errorf("slept %d times for %s in total, want 3 times for 1s", n, sum)
	}

	// Steps without a duration report progress without waiting.
	rec2 := &sleepRecorder{}
	p = newSim(t, provider.SimConfig{Sleep: rec2.sleep})
	got = nil
	_, err = p.Call(context.Background(), provider.Request{
		Job: simJob(`{"sim":{"steps":4}}`), Attempt: 1, Progress: func(pct int) { got = append(got, pct) },
	})
	if err != nil || !equalInts(got, []int{25, 50, 75, 100}) {
		t.Errorf("progress = %v, %v", got, err)
	}
	if n, _ := rec2.total(); n != 0 {
		t.Errorf("slept %d times for a zero duration", n)
	}
}

func TestSimDefaultDuration(t *testing.T) {
	rec := &sleepRecorder{}
	p := newSim(t, provider.SimConfig{Sleep: rec.sleep, DefaultDuration: 250 * time.Millisecond})
	for _, input := range []string{``, `{"sim":{"fail_times":0}}`} {
		if _, err := p.Call(context.Background(), provider.Request{Job: simJob(input), Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// An explicit duration_ms (even 0) overrides the default.
	if _, err := p.Call(context.Background(), provider.Request{Job: simJob(`{"sim":{"duration_ms":0}}`), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if n, sum := rec.total(); n != 2 || sum != 500*time.Millisecond {
		t.Errorf("slept %d times for %s, want 2 times for 500ms", n, sum)
	}
	if _, err := provider.NewSim(provider.SimConfig{DefaultDuration: -1}); !errors.Is(err, provider.ErrInvalidConfig) {
		t.Errorf("negative default duration: %v, want ErrInvalidConfig", err)
	}
}

func TestSimCancelDuringDuration(t *testing.T) {
	p := newSim(t, provider.SimConfig{})
	for _, input := range []string{`{"sim":{"duration_ms":600000}}`, `{"sim":{"duration_ms":600000,"steps":600}}`} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := p.Call(ctx, provider.Request{Job: simJob(input), Attempt: 1, Progress: func(int) {}})
			done <- err
		}()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) || flow.IsTerminal(err) {
			t.Fatalf("%s: err = %v, want retryable context.Canceled", input, err)
		}
	}
}

func TestSimPanicValue(t *testing.T) {
	p := newSim(t, provider.SimConfig{})
	defer func() {
		v := recover()
		if s, ok := v.(string); !ok || !strings.Contains(s, "simulated panic") {
			t.Fatalf("recovered %v, want the simulated panic", v)
		}
	}()
	_, _ = p.Call(context.Background(), provider.Request{Job: simJob(`{"sim":{"panic_times":1}}`), Attempt: 1})
	t.Fatal("Call returned, want a panic")
}

// The benchmark runs no-op jobs: no input.sim must cost one allocation (the
// result) and no timer.
func TestSimNoOpAllocs(t *testing.T) {
	p := newSim(t, provider.SimConfig{})
	ctx := context.Background()
	for _, input := range []string{``, `{"prompt":"a cat on a mat"}`} {
		req := provider.Request{Job: simJob(input), Attempt: 1}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := p.Call(ctx, req); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 1 {
			t.Errorf("input %q: %.0f allocations per no-op call, want 1", input, allocs)
		}
	}
}

func BenchmarkSimNoOp(b *testing.B) {
	p, _ := provider.NewSim(provider.SimConfig{})
	req := provider.Request{Job: simJob(``), Attempt: 1}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Call(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSimCallLogRecordsEveryCall(t *testing.T) {
	var log strings.Builder
	p := newSim(t, provider.SimConfig{CallLog: &log})
	j := simJob(`{"sim":{"fail_times":1}}`)
	_, _ = p.Call(context.Background(), provider.Request{Job: j, Attempt: 1})
	_, _ = p.Call(context.Background(), provider.Request{Job: j, Attempt: 2})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _ = p.Call(ctx, provider.Request{Job: j, Attempt: 3}) // counted: the provider was called
	want := j.ID + " 1\n" + j.ID + " 2\n" + j.ID + " 3\n"
	if log.String() != want {
		t.Fatalf("call log = %q, want %q", log.String(), want)
	}
}
