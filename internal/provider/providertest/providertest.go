// Package providertest is the conformance suite every provider.Provider
// implementation passes (like testing/slogtest for slog handlers).
//
// The suite speaks the vocabulary of the sim provider: each scenario is a
// Behaviour, which the suite encodes as the job's input.sim (Behaviour.Input)
// and also hands to the factory. An implementation under test is set up so
// that a job with that input behaves as described — the sim provider does so
// natively; the http provider is pointed at a test server that acts on
// input.sim. A factory may instead program its provider from the Behaviour
// argument and ignore the input.
package providertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// Behaviour is what a job asks its provider to do; see provider.NewSim for
// the meaning of each field.
type Behaviour struct {
	DurationMS int64           `json:"duration_ms,omitempty"`
	Steps      int             `json:"steps,omitempty"`
	FailTimes  int             `json:"fail_times,omitempty"`
	Fail       string          `json:"fail,omitempty"`
	PanicTimes int             `json:"panic_times,omitempty"`
	HangTimes  int             `json:"hang_times,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
}

// Input returns the job input {"sim": b}.
func (b Behaviour) Input() json.RawMessage {
	out, err := json.Marshal(struct {
		Sim Behaviour `json:"sim"`
	}{b})
	if err != nil {
		panic(err) // only an invalid Result gets here: a bug in the test
	}
	return out
}

// patience bounds how long the suite waits for a call that must return
// promptly. It is a ceiling against hangs, not a timing assertion.
const patience = 20 * time.Second

// Run runs the conformance suite. newProvider is called once per subtest
// with that subtest's Behaviour (Behaviour{} when several are used) and
// returns a provider ready to use; it registers its own cleanup on t.
func Run(t *testing.T, newProvider func(t *testing.T, b Behaviour) provider.Provider) {
	t.Helper()

	t.Run("Name", func(t *testing.T) {
		p := newProvider(t, Behaviour{})
		if p.Name() == "" {
			t.Error("Name() is empty")
		}
	})

	t.Run("SuccessReturnsJSON", func(t *testing.T) {
		b := Behaviour{}
		p := newProvider(t, b)
		out, err := call(t, p, context.Background(), job(t, b), 1, nil)
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if !json.Valid(out) {
			t.Fatalf("result is not JSON: %q", out)
		}
	})

	t.Run("SuccessReturnsGivenResult", func(t *testing.T) {
		b := Behaviour{Result: json.RawMessage(`{"url":"s3://bucket/x.png","n":[1,2]}`)}
		p := newProvider(t, b)
		out, err := call(t, p, context.Background(), job(t, b), 1, nil)
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		assertSameJSON(t, out, b.Result)
	})

	t.Run("TransientFailureThenSuccess", func(t *testing.T) {
		b := Behaviour{FailTimes: 2}
		p := newProvider(t, b)
		j := job(t, b)
		for attempt := 1; attempt <= 2; attempt++ {
			_, err := call(t, p, context.Background(), j, attempt, nil)
			if err == nil {
				t.Fatalf("attempt %d succeeded, want a transient failure", attempt)
			}
			if flow.IsTerminal(err) {
				t.Fatalf("attempt %d: %v is terminal, want retryable", attempt, err)
			}
		}
		out, err := call(t, p, context.Background(), j, 3, nil)
		if err != nil || !json.Valid(out) {
			t.Fatalf("attempt 3 = %q, %v; want a JSON result", out, err)
		}
	})

	t.Run("TerminalFailure", func(t *testing.T) {
		b := Behaviour{Fail: "terminal"}
		p := newProvider(t, b)
		_, err := call(t, p, context.Background(), job(t, b), 1, nil)
		if !flow.IsTerminal(err) {
			t.Fatalf("Call = %v, want a terminal error", err)
		}
	})

	t.Run("TransientThenTerminal", func(t *testing.T) {
		b := Behaviour{FailTimes: 1, Fail: "terminal"}
		p := newProvider(t, b)
		j := job(t, b)
		if _, err := call(t, p, context.Background(), j, 1, nil); err == nil || flow.IsTerminal(err) {
			t.Fatalf("attempt 1 = %v, want a retryable error", err)
		}
		if _, err := call(t, p, context.Background(), j, 2, nil); !flow.IsTerminal(err) {
			t.Fatalf("attempt 2 = %v, want a terminal error", err)
		}
	})

	t.Run("InvalidInputIsTerminal", func(t *testing.T) {
		p := newProvider(t, Behaviour{})
		for _, in := range []string{
			`{"sim":{"fail_times":-1}}`,
			`{"sim":{"duration_ms":"soon"}}`,
			`{"sim":{"duration_ms":600001}}`,
			`{"sim":{"fail":"sometimes"}}`,
			`{"sim":[1]}`,
		} {
			j := job(t, Behaviour{})
			j.Input = json.RawMessage(in)
			if _, err := call(t, p, context.Background(), j, 1, nil); !flow.IsTerminal(err) {
				t.Errorf("input %s: Call = %v, want a terminal error", in, err)
			}
		}
	})

	t.Run("ProgressWithinRangeAndNonDecreasing", func(t *testing.T) {
		b := Behaviour{DurationMS: 20, Steps: 5}
		p := newProvider(t, b)
		var mu sync.Mutex
		var got []int
		out, err := call(t, p, context.Background(), job(t, b), 1, func(pct int) {
			mu.Lock()
			got = append(got, pct)
			mu.Unlock()
		})
		if err != nil || !json.Valid(out) {
			t.Fatalf("Call = %q, %v; want a JSON result", out, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			t.Fatal("no progress reported for a job with steps")
		}
		for i, v := range got {
			if v < 0 || v > 100 {
				t.Errorf("progress[%d] = %d, outside 0..100", i, v)
			}
			if i > 0 && v < got[i-1] {
				t.Errorf("progress went backwards: %v", got)
			}
		}
	})

	t.Run("NilProgressIsFine", func(t *testing.T) {
		b := Behaviour{Steps: 3}
		p := newProvider(t, b)
		if _, err := call(t, p, context.Background(), job(t, b), 1, nil); err != nil {
			t.Fatalf("Call: %v", err)
		}
	})

	t.Run("CancelReturnsPromptly", func(t *testing.T) {
		b := Behaviour{DurationMS: 10 * 60 * 1000, Steps: 10}
		p := newProvider(t, b)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(50 * time.Millisecond) // let the call get going
			cancel()
		}()
		_, err := call(t, p, ctx, job(t, b), 1, nil)
		if err == nil {
			t.Fatal("Call succeeded after its ctx was cancelled")
		}
		if flow.IsTerminal(err) {
			t.Errorf("Call = %v; a cancelled call must not be terminal", err)
		}
	})

	t.Run("CancelledBeforeStart", func(t *testing.T) {
		b := Behaviour{DurationMS: 10 * 60 * 1000}
		p := newProvider(t, b)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := call(t, p, ctx, job(t, b), 1, nil); err == nil || flow.IsTerminal(err) {
			t.Fatalf("Call = %v, want a retryable error", err)
		}
	})

	t.Run("PanicThenSuccess", func(t *testing.T) {
		b := Behaviour{PanicTimes: 1}
		p := newProvider(t, b)
		j := job(t, b)
		// A provider may really panic (the processor's Boundary contains
		// it) or turn the remote crash into a retryable error.
		out, err, panicked := callRecover(t, p, context.Background(), j, 1)
		switch {
		case panicked != nil:
		case err == nil:
			t.Fatalf("attempt 1 = %q, want a panic or a retryable error", out)
		case flow.IsTerminal(err):
			t.Fatalf("attempt 1 = %v, want a panic or a retryable error", err)
		}
		if out, err := call(t, p, context.Background(), j, 2, nil); err != nil || !json.Valid(out) {
			t.Fatalf("attempt 2 = %q, %v; want a JSON result", out, err)
		}
	})

	t.Run("HangThenSuccess", func(t *testing.T) {
		b := Behaviour{HangTimes: 1}
		p := newProvider(t, b)
		j := job(t, b)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := call(t, p, ctx, j, 1, nil)
		if err == nil || flow.IsTerminal(err) {
			t.Fatalf("hung attempt = %v, want a retryable error", err)
		}
		if out, err := call(t, p, context.Background(), j, 2, nil); err != nil || !json.Valid(out) {
			t.Fatalf("attempt 2 = %q, %v; want a JSON result", out, err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		b := Behaviour{FailTimes: 1, Steps: 2}
		p := newProvider(t, b)
		const n = 16
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				j := job(t, b)
				j.ID = fmt.Sprintf("%s-%d", j.ID, i)
				if _, err := p.Call(context.Background(), provider.Request{Job: j, Attempt: 1}); err == nil || flow.IsTerminal(err) {
					errs <- fmt.Errorf("job %d attempt 1 = %v, want retryable", i, err)
					return
				}
				if _, err := p.Call(context.Background(), provider.Request{Job: j, Attempt: 2, Progress: func(int) {}}); err != nil {
					errs <- fmt.Errorf("job %d attempt 2: %w", i, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// job returns a valid job whose input is b.Input().
func job(t *testing.T, b Behaviour) envelope.Job {
	return envelope.Job{
		ID:        "job-" + sanitize(t.Name()),
		User:      "user-1",
		Kind:      "image",
		Priority:  envelope.Priority("normal"),
		Input:     b.Input(),
		CreatedAt: time.Unix(1700000000, 0).UTC(),
	}
}

func sanitize(s string) string {
	out := []byte(s)
	for i, c := range out {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			out[i] = '_'
		}
	}
	if len(out) > 50 {
		out = out[len(out)-50:]
	}
	return string(out)
}

// call runs p.Call in a goroutine and fails the test if it does not return
// within patience (a provider that ignores ctx would hang the suite).
func call(t *testing.T, p provider.Provider, ctx context.Context, j envelope.Job, attempt int, progress func(int)) (json.RawMessage, error) {
	t.Helper()
	out, err, panicked := callRecover(t, p, ctx, j, attempt, progress)
	if panicked != nil {
		t.Fatalf("attempt %d panicked: %v", attempt, panicked)
	}
	return out, err
}

func callRecover(t *testing.T, p provider.Provider, ctx context.Context, j envelope.Job, attempt int, progress ...func(int)) (json.RawMessage, error, any) {
	t.Helper()
	type result struct {
		out      json.RawMessage
		err      error
		panicked any
	}
	var pf func(int)
	if len(progress) > 0 {
		pf = progress[0]
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			r.panicked = recover()
			done <- r
		}()
		r.out, r.err = p.Call(ctx, provider.Request{Job: j, Attempt: attempt, Progress: pf})
	}()
	timer := time.NewTimer(patience)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.out, r.err, r.panicked
	case <-timer.C:
		t.Fatalf("Call (attempt %d) did not return within %s", attempt, patience)
		return nil, errors.New("unreachable"), nil
	}
}

func assertSameJSON(t *testing.T, got, want json.RawMessage) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("result %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("want %q is not JSON: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Fatalf("result = %s, want %s", gb, wb)
	}
}
