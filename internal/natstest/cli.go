package natstest

import (
	"bytes"
	"context"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CLIInstall is how .ci/run installs the nats CLI that tests drive.
const CLIInstall = "go install github.com/nats-io/natscli/nats@v0.5.0"

// CLI runs the real nats CLI against one server, with no context, no user
// config and no NATS_* variables from the environment.
type CLI struct {
	Bin, URL string
	// Args are passed before every command (e.g. --user, --password).
	Args []string
	home string
}

// NewCLI finds the nats binary on PATH or in $GOPATH/bin. Without it the
// test is skipped on a laptop but fails under CI=true, so CI can never pass
// by silently skipping what the CLI checks.
func NewCLI(t testing.TB, url string, args ...string) CLI {
	t.Helper()
	return CLI{Bin: findCLI(t), URL: url, Args: args, home: t.TempDir()}
}

func findCLI(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	gopaths := []string{os.Getenv("GOPATH"), build.Default.GOPATH}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopaths = append(gopaths, strings.TrimSpace(string(out)))
	}
	for _, dir := range filepath.SplitList(strings.Join(gopaths, string(filepath.ListSeparator))) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, "bin", "nats")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatalf("the nats CLI is not installed (CI=%s, so this is a failure, not a skip); install it with: %s", ci, CLIInstall)
	}
	t.Skipf("the nats CLI is not on PATH or in $GOPATH/bin; install it with: %s", CLIInstall)
	return ""
}

// Run runs one CLI command and returns its stdout; a failure fails the test.
func (c CLI) Run(t testing.TB, args ...string) string {
	t.Helper()
	return c.exec(t, append(append([]string{"--server", c.URL, "--timeout", "10s"}, c.Args...), args...)...)
}

// exec runs c.Bin with exactly args in a clean environment.
func (c CLI) exec(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Bin, args...)
	env := []string{"HOME=" + c.home, "XDG_CONFIG_HOME=" + filepath.Join(c.home, ".config"), "NO_COLOR=1"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NATS_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(c.Bin), strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// RunTTY runs a command that insists on a terminal (`nats stream view`
// pages interactively) under script(1), which gives it a pseudo-terminal,
// and returns what it printed.
func (c CLI) RunTTY(t testing.TB, args ...string) string {
	t.Helper()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Fatalf("script(1) from util-linux is needed to give the nats CLI a terminal: %v", err)
	}
	full := append(append([]string{c.Bin, "--server", c.URL, "--timeout", "10s"}, c.Args...), args...)
	quoted := make([]string, len(full))
	for i, a := range full {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return CLI{Bin: script, URL: c.URL, home: c.home}.exec(t, "-q", "-e", "-c", strings.Join(quoted, " "), "/dev/null")
}
