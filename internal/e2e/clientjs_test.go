package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClientJS runs web/test (node --test): beamline.js against a fake
// notifier (ordering, de-duplication, resume with last_seq, recovered:false,
// heartbeats, join errors, submit errors) and the React hook. Skipped when
// node or web/test/node_modules is missing, unless CI=true.
func TestClientJS(t *testing.T) {
	dir, err := filepath.Abs("../../web/test")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "ws"))
	if err != nil || modErr != nil {
		msg := "node or web/test/node_modules missing (run npm ci in web/test)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > 9 {
		lines = lines[len(lines)-9:]
	}
	t.Logf("node --test:\n%s", strings.Join(lines, "\n"))
}
