package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/streams"
)

// buildDevstack compiles this command once per test binary run.
func buildDevstack(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "devstack")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

var readyRE = regexp.MustCompile(`^beamline devstack ready: ingest=(\S+) notifier=(\S+) nats=(\S+) processor=(\S+) token=(\S+)$`)

type running struct {
	cmd      *exec.Cmd
	ingest   string
	notifier string
	token    string
	stderr   *testutil.Buffer
	exited   chan error
}

// startDevstack runs the binary on dataDir and waits for its ready line;
// an empty secret leaves devstack to the one kept in dataDir. extra flags
// come last.
func startDevstack(t *testing.T, bin, dataDir, secret string, extra ...string) *running {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-data", dataDir, "-nats-port", "-1",
		"-ingest-addr", "127.0.0.1:0", "-notifier-addr", "127.0.0.1:0", "-processor-addr", "127.0.0.1:0"}, extra...)...)
	cmd.Env = append(os.Environ(), "BEAMLINE_AUTH_SECRET="+secret)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, stderr: &testutil.Buffer{}, exited: make(chan error, 1)}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-r.exited
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody listens any more; keep draining
			}
		}
		r.exited <- cmd.Wait()
		close(lines)
	}()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("devstack exited before ready; stderr:\n%s", r.stderr)
			}
			if m := readyRE.FindStringSubmatch(line); m != nil {
				r.ingest, r.notifier, r.token = m[1], m[2], m[5]
				return r
			}
		case <-timeout:
			t.Fatalf("devstack not ready in 60s; stderr:\n%s", r.stderr)
		}
	}
}

func (r *running) do(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, r.ingest+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+r.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, b := testutil.Do(t, http.DefaultClient, req)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// Queued jobs survive a SIGTERM of devstack and complete after a restart
// on the same -data (issue 2).
func TestQueuedJobsSurviveRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildDevstack(t)
	data := t.TempDir()
	const secret = "restart-test-secret-0123456789"

	first := startDevstack(t, bin, data, secret)
	// One user: at most 4 run at once, so most of the 20 are still queued
	// (in JOBS, or waiting for the user's slot) when SIGTERM arrives.
	var ids []string
	for i := range 20 {
		code, snap := first.do(t, http.MethodPost, "/v1/jobs",
			fmt.Sprintf(`{"kind":"image","input":{"n":%d,"sim":{"duration_ms":1500}}}`, i))
		if code != http.StatusAccepted {
			t.Fatalf("submit %d: %d %v", i, code, snap)
		}
		ids = append(ids, snap["id"].(string))
	}
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-first.exited:
		if err != nil {
			t.Fatalf("devstack exited with %v after SIGTERM; stderr:\n%s", err, first.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("devstack did not stop within 60s of SIGTERM")
	}
	first.exited <- nil // for the cleanup
	if n := queuedIn(t, data); n == 0 {
		t.Fatal("JOBS was empty after SIGTERM: the test would prove nothing about restarts")
	} else {
		t.Logf("%d of 20 jobs still queued in JOBS after SIGTERM", n)
	}

	second := startDevstack(t, bin, data, secret)
	deadline := time.Now().Add(60 * time.Second)
	for _, id := range ids {
		for {
			code, snap := second.do(t, http.MethodGet, "/v1/jobs/"+id, "")
			if code != http.StatusOK {
				t.Fatalf("GET %s after restart: %d %v", id, code, snap)
			}
			if snap["status"] == "succeeded" {
				break
			}
			if snap["status"] != "queued" && snap["status"] != "running" && snap["status"] != "retrying" {
				t.Fatalf("job %s ended %v", id, snap)
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s not done after restart: %v", id, snap)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// queuedIn opens the stopped stack's store with a bare server and counts
// the messages left in JOBS.
func queuedIn(t *testing.T, dataDir string) uint64 {
	t.Helper()
	srv, err := natsx.RunEmbedded(natsx.EmbeddedConfig{Port: -1, StoreDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streams.Jobs)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &errb); config.ExitCode(err) != config.ExitOK {
		t.Fatal(err)
	}
	for _, flag := range []string{"-data", "-nats-port", "-ingest-addr", "-notifier-addr", "-auth-secret"} {
		if !strings.Contains(errb.String(), flag) {
			t.Errorf("--help does not mention %s:\n%s", flag, errb.String())
		}
	}
}
