package flow_test

import (
	"math"
	"testing"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

func constRand(v float64) func() float64 { return func() float64 { return v } }

func TestBackoff(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name     string
		attempt  int
		min, max time.Duration
		jitter   float64
		rnd      func() float64
		want     time.Duration
	}{
		{"attempt 1 is min", 1, 10 * ms, time.Second, 0, nil, 10 * ms},
		{"attempt 0 counts as 1", 0, 10 * ms, time.Second, 0, nil, 10 * ms},
		{"negative attempt counts as 1", -3, 10 * ms, time.Second, 0, nil, 10 * ms},
		{"doubles", 2, 10 * ms, time.Second, 0, nil, 20 * ms},
		{"doubles again", 4, 10 * ms, time.Second, 0, nil, 80 * ms},
		{"capped", 10, 10 * ms, time.Second, 0, nil, time.Second},
		{"huge attempt does not overflow", math.MaxInt, 10 * ms, time.Hour, 0, nil, time.Hour},
		{"max below min is min", 3, 10 * ms, ms, 0, nil, 10 * ms},
		{"zero min", 3, 0, time.Second, 0.5, nil, 0},
		{"jitter low end", 1, 100 * ms, time.Second, 0.2, constRand(0), 80 * ms},
		{"jitter middle", 1, 100 * ms, time.Second, 0.2, constRand(0.5), 100 * ms},
		{"jitter high end", 2, 100 * ms, time.Second, 0.5, constRand(1), 300 * ms},
		{"jitter capped at max", 10, 100 * ms, time.Second, 0.5, constRand(1), time.Second},
		{"jitter clamped to 1", 1, 100 * ms, time.Second, 7, constRand(0), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := flow.Backoff(tt.attempt, tt.min, tt.max, tt.jitter, tt.rnd)
			if got != tt.want {
				t.Errorf("Backoff(%d, %v, %v, %v) = %v, want %v", tt.attempt, tt.min, tt.max, tt.jitter, got, tt.want)
			}
		})
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	for attempt := 1; attempt <= 12; attempt++ {
		base := flow.Backoff(attempt, 10*time.Millisecond, time.Second, 0, nil)
		lo, hi := time.Duration(float64(base)*0.75), min(time.Duration(float64(base)*1.25), time.Second)
		for range 200 {
			got := flow.Backoff(attempt, 10*time.Millisecond, time.Second, 0.25, nil)
			if got < lo || got > hi {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, got, lo, hi)
			}
		}
	}
}
