package processor

import (
	"testing"

	"github.com/beamline/beamline/internal/testutil"
)

// counterValue sums the samples of a metric whose labels include want.
func counterValue(t *testing.T, r *running, name string, want map[string]string) float64 {
	t.Helper()
	return testutil.GatheredValue(t, r.reg, name, want)
}
