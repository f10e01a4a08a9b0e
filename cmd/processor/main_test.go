package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/jobstore"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/testutil"
	"github.com/beamline/beamline/pkg/envelope"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "processor-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "processor")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("internal/poll.runtime_pollWait")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type stack struct {
	t     *testing.T
	url   string
	js    jetstream.JetStream
	store *jobstore.Store
}

func newStack(t *testing.T) *stack {
	srv, _, js := natstest.StartWithStreams(t)
	kv, err := jsm.JobStatus(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return &stack{t: t, url: srv.ClientURL(), js: js, store: jobstore.New(js, kv, jobstore.Config{})}
}

// processor starts the binary; it is killed when the test ends.
func (s *stack) processor(args ...string) *exec.Cmd {
	s.t.Helper()
	var stderr io.Writer
	if testing.Verbose() {
		stderr = os.Stderr
	}
	return s.processorTo(stderr, args...)
}

// processorTo is processor with its stderr going to w.
func (s *stack) processorTo(w io.Writer, args ...string) *exec.Cmd {
	s.t.Helper()
	args = append([]string{"-nats", s.url, "-addr", "127.0.0.1:0", "-kinds", "image", "-log-format", "json"}, args...)
	cmd := exec.Command(binary, args...)
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

func (s *stack) submit(n int, durationMS int) []envelope.Job {
	s.t.Helper()
	var out []envelope.Job
	for i := range n {
		j := envelope.Job{
			ID: fmt.Sprintf("job-%d-%d", time.Now().UnixNano(), i), User: "alice", Kind: "image",
			Priority: envelope.PriorityNormal, CreatedAt: time.Now().UTC(),
			Input: []byte(fmt.Sprintf(`{"sim":{"duration_ms":%d}}`, durationMS)),
		}
		s.enqueue(j)
		out = append(out, j)
	}
	return out
}

// waitAllDelivered waits until every one of n messages is delivered and unacked.
func (s *stack) waitAllDelivered(n int) {
	s.t.Helper()
	testutil.WaitFor(s.t, 20*time.Second, func() bool {
		c, err := s.js.Consumer(context.Background(), "JOBS", jsm.ConsumerName(envelope.PriorityNormal, "image"))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == n
	})
}

func (s *stack) snapshot(id string) envelope.Snapshot {
	snap, _, _ := s.store.Get(context.Background(), id)
	return snap
}

func TestHelp(t *testing.T) {
	out, err := exec.Command(binary, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
}

func TestKill9JobsCompleteOnOtherProcessorAfterAckWait(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	s := newStack(t)
	jobs := s.submit(3, 2000)
	a := s.processor("-ack-wait", "2s", "-concurrency", "4")
	s.waitAllDelivered(len(jobs))
	testutil.WaitFor(t, 10*time.Second, func() bool {
		for _, j := range jobs {
			if s.snapshot(j.ID).Status != envelope.StatusRunning {
				return false
			}
		}
		return true
	})
	b := s.processor("-ack-wait", "2s", "-concurrency", "4")
	if err := a.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.Wait()
	testutil.WaitFor(t, 30*time.Second, func() bool {
		for _, j := range jobs {
			if s.snapshot(j.ID).Status != envelope.StatusSucceeded {
				return false
			}
		}
		return true
	})
	for _, j := range jobs {
		if snap := s.snapshot(j.ID); snap.Attempt != 2 {
			t.Fatalf("job %s: attempt %d, want 2 (redelivered once)", j.ID, snap.Attempt)
		}
	}
	stopProc(t, b)
}

func TestSIGTERMFinishesInFlightAndHandsOverTheRest(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	s := newStack(t)
	jobs := s.submit(4, 1500)
	// ack_wait far beyond the test: anything taken over was handed back.
	a := s.processor("-ack-wait", "60s", "-concurrency", "2", "-max-per-user", "1")
	s.waitAllDelivered(len(jobs))
	var first envelope.Job
	testutil.WaitFor(t, 10*time.Second, func() bool {
		for _, j := range jobs {
			if s.snapshot(j.ID).Status == envelope.StatusRunning {
				first = j
				return true
			}
		}
		return false
	})
	b := s.processor("-ack-wait", "60s", "-concurrency", "2", "-max-per-user", "4")
	stopProc(t, a)
	if snap := s.snapshot(first.ID); snap.Status != envelope.StatusSucceeded || snap.Attempt != 1 {
		t.Fatalf("in-flight job after SIGTERM: %+v", snap)
	}
	testutil.WaitFor(t, 20*time.Second, func() bool {
		for _, j := range jobs {
			if s.snapshot(j.ID).Status != envelope.StatusSucceeded {
				return false
			}
		}
		return true
	})
	stopProc(t, b)
}

// stopProc sends SIGTERM and requires a clean exit.
func stopProc(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("processor exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("processor did not exit after SIGTERM")
	}
}

// submitSim submits one job of alice with input {"sim": sim}.
func (s *stack) submitSim(sim string) envelope.Job {
	s.t.Helper()
	j := envelope.Job{
		ID: fmt.Sprintf("job-%d", time.Now().UnixNano()), User: "alice", Kind: "image",
		Priority: envelope.PriorityNormal, CreatedAt: time.Now().UTC(),
		Input: []byte(`{"sim":` + sim + `}`),
	}
	s.enqueue(j)
	return j
}

// enqueue stores j's queued snapshot and publishes its job message.
func (s *stack) enqueue(j envelope.Job) {
	s.t.Helper()
	if _, err := s.store.Create(context.Background(), j); err != nil {
		s.t.Fatal(err)
	}
	m, err := envelope.NewJobMsg(j, "/test", "")
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.js.PublishMsg(context.Background(), m); err != nil {
		s.t.Fatal(err)
	}
}

// kill -9 during a job's last allowed attempt: JetStream's own max_deliver
// would never redeliver it and the job would stay running forever. With the
// limit enforced by the processor, the redelivery after ack_wait is
// dead-lettered by the other processor.
func TestKill9OnLastAttemptEndsDead(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	s := newStack(t)
	// Attempt 1 fails; attempt 2 (the last of -max-deliver 2) runs a minute.
	j := s.submitSim(`{"fail_times":1,"duration_ms":60000}`)
	flags := []string{"-ack-wait", "2s", "-max-deliver", "2", "-concurrency", "2"}
	a := s.processor(flags...)
	testutil.WaitFor(t, 20*time.Second, func() bool {
		snap := s.snapshot(j.ID)
		return snap.Status == envelope.StatusRunning && snap.Attempt == 2
	})
	if err := a.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.Wait()
	b := s.processor(flags...)
	testutil.WaitFor(t, 30*time.Second, func() bool { return s.snapshot(j.ID).Status == envelope.StatusDead })
	if snap := s.snapshot(j.ID); snap.Attempt != 2 || !strings.Contains(snap.Error, "never finished") {
		t.Fatalf("dead snapshot %+v", snap)
	}
	ctx := context.Background()
	dlq, err := s.js.Stream(ctx, "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	// The DLQ copy is stored after the dead snapshot: wait for it.
	var m *jetstream.RawStreamMsg
	testutil.WaitFor(t, 10*time.Second, func() bool {
		m, err = dlq.GetLastMsgForSubject(ctx, "dlq.image")
		return err == nil
	}, "no DLQ copy of the dead job")
	if _, orig, err := envelope.DecodeJob(m.Data); err != nil || orig.ID != j.ID ||
		m.Header.Get("Beamline-Attempts") != "2" || m.Header.Get("Nats-Msg-Id") != "dead:"+j.ID {
		t.Fatalf("DLQ entry %v %+v %v", err, orig, m.Header)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { // termed: nothing left to deliver
		c, err := s.js.Consumer(ctx, "JOBS", jsm.ConsumerName(envelope.PriorityNormal, "image"))
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	stopProc(t, b)
}

// When its supervisor gives up (here: the JOBS stream is deleted under it,
// so every puller restart fails), the processor exits non-zero so that its
// orchestrator restarts it, and the restart re-applies the streams.
func TestSupervisorGiveUpExitsNonZero(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	s := newStack(t)
	var stderr bytes.Buffer
	cmd := s.processorTo(&stderr)
	ctx := context.Background()
	// Every consumer applied (Run's setup applies them all before it
	// starts the supervisor), so deleting JOBS hits the supervised pullers,
	// not the setup.
	testutil.WaitFor(t, 20*time.Second, func() bool {
		for _, prio := range envelope.Priorities {
			if _, err := s.js.Consumer(ctx, "JOBS", jsm.ConsumerName(prio, "image")); err != nil {
				return false
			}
		}
		return true
	})
	if err := s.js.DeleteStream(ctx, "JOBS"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("processor did not give up after JOBS was deleted; its log:\n%s", stderr.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("exit: %v, want a non-zero exit code", err)
	}
	if !strings.Contains(stderr.String(), "restart intensity") {
		t.Fatalf("stderr does not name the give-up:\n%s", stderr.String())
	}
}

func TestBreakerFlags(t *testing.T) {
	out, err := exec.Command(binary, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, f := range []string{"-breaker-min-requests", "-breaker-failure-ratio", "-breaker-open"} {
		if !strings.Contains(string(out), f) {
			t.Errorf("--help does not document %s:\n%s", f, out)
		}
	}
	for _, args := range [][]string{
		{"-breaker-failure-ratio", "1.5"}, {"-breaker-failure-ratio", "0"},
		{"-breaker-min-requests", "0"}, {"-breaker-open", "0s"},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "breaker") {
			t.Errorf("run(%v) = %v, want a breaker flag error", args, err)
		}
	}
}

// TestWebhookURLFlag: -webhook-url must be an absolute URL, and needs a key
// (BEAMLINE_WEBHOOK_KEY, or the auth secret to derive it): exit 2 otherwise.
func TestWebhookURLFlag(t *testing.T) {
	t.Setenv(provider.EnvWebhookKey, "")
	t.Setenv("BEAMLINE_AUTH_SECRET", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-webhook-url", "http://ingest:8080"}, provider.EnvWebhookKey},
		{[]string{"-webhook-url", "ingest:8080"}, "webhook-url"},
	} {
		if tc.want == "webhook-url" {
			t.Setenv(provider.EnvWebhookKey, "a-webhook-key-0123456789")
		}
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if code := config.ExitCode(err); code != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%v) = exit %d: %v; want 2 naming %s", tc.args, code, err, tc.want)
		}
	}
}
