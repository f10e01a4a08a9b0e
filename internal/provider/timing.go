package provider

import (
	"encoding/json"
	"time"
)

// Timing is what a remote prediction says about its own times, reported
// once it is terminal through Request.Timing (docs/design.md#telemetry).
// A zero duration is unknown.
type Timing struct {
	// Queued is how long the prediction waited at the provider before it
	// ran: started_at − created_at (a cold boot, a queue for a GPU).
	Queued time.Duration
	// Run is the model's run time: metrics.predict_time.
	Run time.Duration
}

// predictionTimes are the time fields Cog and Replicate share in a
// prediction object; raw, so that a value of another shape is ignored
// rather than refusing the prediction.
type predictionTimes struct {
	CreatedAt json.RawMessage `json:"created_at"`
	StartedAt json.RawMessage `json:"started_at"`
}

func parseTime(raw json.RawMessage) (time.Time, bool) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// timing reads the times of a prediction; predictTime is its
// metrics.predict_time in seconds, when set.
func (t predictionTimes) timing(predictTime *float64) Timing {
	var out Timing
	created, ok1 := parseTime(t.CreatedAt)
	started, ok2 := parseTime(t.StartedAt)
	if ok1 && ok2 && !started.Before(created) {
		out.Queued = started.Sub(created)
	}
	if predictTime != nil && *predictTime > 0 && *predictTime < 1e9 {
		out.Run = time.Duration(*predictTime * float64(time.Second))
	}
	return out
}

// newRequestTracker is the progress tracker of req, which also reports
// the terminal prediction's Timing.
func newRequestTracker(req Request) *progressTracker {
	t := newProgressTracker(req.Progress).withPreview(req.Preview)
	t.timing = req.Timing
	return t
}

// timed reports t, when the request asked for it and something is known.
func (t *progressTracker) timed(tm Timing) {
	if t.timing != nil && (tm.Queued > 0 || tm.Run > 0) {
		t.timing(tm)
	}
}
