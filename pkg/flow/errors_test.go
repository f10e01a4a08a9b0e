package flow_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

var errBase = errors.New("base")

func TestClassification(t *testing.T) {
	tests := []struct {
		name         string
		err          error
		wantTerminal bool
		wantHint     time.Duration
		wantHintOK   bool
	}{
		{name: "nil", err: nil},
		{name: "unclassified", err: errBase},
		{name: "terminal", err: flow.Terminal(errBase), wantTerminal: true},
		{name: "wrapped terminal", err: fmt.Errorf("ctx: %w", flow.Terminal(errBase)), wantTerminal: true},
		{name: "retryable no hint", err: flow.Retryable(errBase, 0)},
		{name: "retryable hint", err: flow.Retryable(errBase, time.Second), wantHint: time.Second, wantHintOK: true},
		{name: "outermost wins: retryable", err: flow.Retryable(flow.Terminal(errBase), 3*time.Second), wantHint: 3 * time.Second, wantHintOK: true},
		{name: "outermost wins: terminal", err: flow.Terminal(flow.Retryable(errBase, time.Second)), wantTerminal: true},
		{name: "joined", err: errors.Join(errBase, flow.Terminal(errBase)), wantTerminal: true},
		{name: "panic", err: &flow.PanicError{Value: "boom"}},
		{name: "timeout", err: &flow.TimeoutError{Timeout: time.Second}},
		{name: "context", err: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := flow.IsTerminal(tt.err); got != tt.wantTerminal {
				t.Errorf("IsTerminal = %v, want %v", got, tt.wantTerminal)
			}
			hint, ok := flow.RetryAfterHint(tt.err)
			if hint != tt.wantHint || ok != tt.wantHintOK {
				t.Errorf("RetryAfterHint = %v, %v; want %v, %v", hint, ok, tt.wantHint, tt.wantHintOK)
			}
			if tt.err != nil && tt.name != "panic" && tt.name != "timeout" && tt.name != "context" &&
				!errors.Is(tt.err, errBase) {
				t.Errorf("errors.Is(%v, errBase) = false", tt.err)
			}
		})
	}
}

func TestClassificationKeepsMessageAndNil(t *testing.T) {
	if flow.Retryable(nil, time.Second) != nil || flow.Terminal(nil) != nil {
		t.Fatal("classifying nil must return nil")
	}
	if got := flow.Terminal(errBase).Error(); got != "base" {
		t.Errorf("Terminal message = %q, want %q", got, "base")
	}
	if got := flow.Retryable(errBase, time.Second).Error(); got != "base" {
		t.Errorf("Retryable message = %q, want %q", got, "base")
	}
	var te *flow.TerminalError
	if !errors.As(fmt.Errorf("x: %w", flow.Terminal(errBase)), &te) || te.Err != errBase {
		t.Errorf("errors.As TerminalError failed: %v", te)
	}
}
