package main

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/phoenix/phoenixtest"
	"github.com/beamline/beamline/internal/testutil"
)

// Ctrl-C says what it waits for; a second one stops at once, and the job
// that was running is redelivered on the next start and succeeds. The
// restart keeps the dev secret in the data folder, so the first start's
// token still works (issue 16, items 3 and 4).
func TestSecondInterruptStopsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildDevstack(t)
	data := t.TempDir()

	// No secret given: devstack keeps its own in data. A long grace, so
	// that only the second interrupt can explain a quick exit.
	first := startDevstack(t, bin, data, "", "-grace", "60s")
	code, snap := first.do(t, http.MethodPost, "/v1/jobs", `{"kind":"image","input":{"sim":{"steps":4,"duration_ms":15000}}}`)
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %v", code, snap)
	}
	id := snap["id"].(string)
	testutil.WaitFor(t, 20*time.Second, func() bool {
		_, s := first.do(t, http.MethodGet, "/v1/jobs/"+id, "")
		return s["status"] == "running"
	}, "the job to run")

	if err := first.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	const waiting = "waiting up to 1m0s for 1 running job(s) to finish"
	testutil.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(first.stderr.String(), waiting) },
		"the log line saying what the stop waits for")
	if err := first.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	select {
	case err := <-first.exited:
		took := time.Since(sent)
		first.exited <- err // for the cleanup
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != config.ExitInterrupted {
			t.Fatalf("exit after the second SIGINT: %v, want code %d; stderr:\n%s", err, config.ExitInterrupted, first.stderr)
		}
		t.Logf("exited %v after the second SIGINT", took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Fatalf("exited %v after the second SIGINT, want within 2s", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10s after the second SIGINT; stderr:\n%s", first.stderr)
	}

	second := startDevstack(t, bin, data, "")
	second.token = first.token // the first start's token, kept by the browser tab
	deadline := time.Now().Add(120 * time.Second)
	for {
		code, s := second.do(t, http.MethodGet, "/v1/jobs/"+id, "")
		if code != http.StatusOK {
			t.Fatalf("GET the job with the old token after restart: %d %v", code, s)
		}
		if s["status"] == "succeeded" {
			t.Logf("redelivered and succeeded: attempt %v", s["attempt"])
			break
		}
		if s["status"] != "running" && s["status"] != "queued" && s["status"] != "retrying" {
			t.Fatalf("job ended %v", s)
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not done 120s after the restart: %v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The old token also opens a socket and joins.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := phoenixtest.Dial(ctx, phoenixtest.URL(second.notifier, first.token), phoenixtest.Options{})
	if err != nil {
		t.Fatalf("socket with the old token: %v", err)
	}
	defer c.Close()
	if _, err := c.JoinOK(ctx, "user:dev", nil); err != nil {
		t.Fatalf("join with the old token: %v", err)
	}
	if code, s := second.do(t, http.MethodPost, "/v1/jobs", `{"kind":"image"}`); code != http.StatusAccepted {
		t.Fatalf("submit with the old token: %d %v", code, s)
	}
}
