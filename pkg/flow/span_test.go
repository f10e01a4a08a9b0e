package flow_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

type observation struct {
	name string
	d    time.Duration
	err  error
}

func TestSpan(t *testing.T) {
	var got []observation
	obs := func(_ context.Context, name string, d time.Duration, err error) {
		got = append(got, observation{name, d, err})
	}
	ctx := context.Background()
	if err := flow.Span(ctx, "ok", obs, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := flow.Span(ctx, "fail", flow.Observers(obs, nil), func(context.Context) error { return errBase }); !errors.Is(err, errBase) {
		t.Fatalf("Span returned %v", err)
	}
	if err := flow.Span(ctx, "no observer", nil, func(context.Context) error { return errBase }); !errors.Is(err, errBase) {
		t.Fatalf("Span returned %v", err)
	}
	if len(got) != 2 || got[0].name != "ok" || got[0].err != nil || got[1].name != "fail" || !errors.Is(got[1].err, errBase) {
		t.Fatalf("observations = %+v", got)
	}
	for _, o := range got {
		if o.d < 0 {
			t.Errorf("%s: negative duration %v", o.name, o.d)
		}
	}
}

func TestSpanPanicIsObservedAndPropagates(t *testing.T) {
	var seen error
	obs := func(_ context.Context, _ string, _ time.Duration, err error) { seen = err }
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v, want boom", r)
		}
		var pe *flow.PanicError
		if !errors.As(seen, &pe) || pe.Value != "boom" {
			t.Fatalf("observer saw %v, want *PanicError(boom)", seen)
		}
	}()
	_ = flow.Span(context.Background(), "p", obs, func(context.Context) error { panic("boom") })
}
