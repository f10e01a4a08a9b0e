package provider_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// A job's input.sim drives the simulated provider: here the first attempt
// fails transiently and the second takes 3 seconds (instantly, with an
// injected Sleep) reporting progress in three steps.
func ExampleNewSim() {
	sim, err := provider.NewSim(provider.SimConfig{
		Sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() },
	})
	if err != nil {
		panic(err)
	}
	job := envelope.Job{
		ID: "j42", User: "ada", Kind: "image", Priority: "normal",
		Input: json.RawMessage(`{"prompt":"a lighthouse","sim":{"duration_ms":3000,"steps":3,"fail_times":1}}`),
	}
	for attempt := 1; attempt <= 2; attempt++ {
		out, err := sim.Call(context.Background(), provider.Request{
			Job:      job,
			Attempt:  attempt,
			Progress: func(pct int) { fmt.Printf("attempt %d: %d%%\n", attempt, pct) },
		})
		if err != nil {
			fmt.Printf("attempt %d: %v (terminal: %v)\n", attempt, err, flow.IsTerminal(err))
			continue
		}
		fmt.Printf("attempt %d: result %s\n", attempt, out)
	}
	// Output:
	// attempt 1: provider: simulated failure: transient (attempt 1, fail_times 1) (terminal: false)
	// attempt 2: 33%
	// attempt 2: 66%
	// attempt 2: 100%
	// attempt 2: result {"url":"sim://image/j42","attempt":2}
}
