package kit

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Figures reports a test's summary line (jobs accepted, completed, lost …)
// where a reader will see it even when the test passes: the test log, stdout
// (shown by `go test -v`), and, when $BEAMLINE_ARTIFACTS is set, a line
// appended to <artifacts>/figures.txt, which .ci/run prints after the tests —
// `go test` without -v keeps a passing test's output to itself.
func Figures(t testing.TB, line string) {
	t.Helper()
	t.Log(line)
	fmt.Println(line)
	dir := os.Getenv("BEAMLINE_ARTIFACTS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("figures: %v", err)
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, "figures.txt"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("figures: %v", err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Errorf("figures: %v", err)
	}
}
