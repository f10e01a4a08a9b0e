package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExitCodes builds the binary and checks that its exit codes are
// beamctl.Main's, as scripts see them.
func TestExitCodes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "beamctl")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "Usage: beamctl"},
		{[]string{"jobs", "get", "--help"}, 0, "Usage: beamctl jobs get"},
		{nil, 2, "Usage: beamctl"},
		{[]string{"jobs", "get", "j1"}, 2, "BEAMLINE_TOKEN"},
		{[]string{"jobs", "get", "j1", "--api", "http://127.0.0.1:1", "--token", "t"}, 1, "connection refused"},
	} {
		cmd := exec.Command(bin, c.args...)
		cmd.Env = []string{}
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(string(out), c.want) {
			t.Errorf("beamctl %q: exit %d (want %d), output %q (want %q)", c.args, code, c.code, out, c.want)
		}
	}
}
