package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/streams"
	"github.com/beamline/beamline/test/chaos/kit"
)

const secret = "faults-test-secret-0123456789abcdef"

var passwords = kit.Users{
	"ingest": "faults-pw-ingest", "processor": "faults-pw-processor",
	"notifier": "faults-pw-notifier", "admin": "faults-pw-admin",
}

// stack is Beamline as separate OS processes, each on its own nats.conf
// user, as test/chaos runs it: nats-server, ingest, two processors and a
// notifier.
type stack struct {
	natsPort, natsHTTP int
	nats               *kit.Proc
	ingest             *kit.Proc
	procs              []*kit.Proc
	procReady          []string
	notifier           *kit.Proc
	ingestURL          string
	notifURL           string
	callLog            string
	nc                 *nats.Conn
	js                 jetstream.JetStream
	// limits are the max_msg_size of EVENTS and KV_job_status as
	// streams/ defines them: what an outage restores.
	limits map[string]int32
}

func startStack(t *testing.T) *stack {
	t.Helper()
	bin := kit.BuildBinaries(t)
	logs := kit.LogDir(t, "BEAMLINE_FAULTS_LOG_DIR")
	st := &stack{natsPort: kit.FreePort(t), natsHTTP: kit.FreePort(t), callLog: filepath.Join(logs, "sim-calls.log")}
	// A kept log folder may hold an earlier run's call log: start afresh.
	if err := os.Remove(st.callLog); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	conf := loopbackConf(t, st.natsPort, st.natsHTTP)
	natsEnv := passwords.ServerEnv("faults", t.TempDir())
	st.nats = kit.NewProc(t, logs, "nats-server", filepath.Join(bin, "nats-server"), natsEnv,
		"-c", conf, "-a", "127.0.0.1", "-p", strconv.Itoa(st.natsPort))
	st.nats.Start(t)
	st.nats.WaitHTTP(t, st.natsHealthURL(), 20*time.Second)

	svc := func(name, binary, user string, env []string, args ...string) *kit.Proc {
		env = append(env, "NATS_URL="+passwords.URL(st.natsPort, user), "BEAMLINE_AUTH_SECRET="+secret)
		return kit.NewProc(t, logs, name, filepath.Join(bin, binary), env, append(args, "-log-format", "json", "-kinds", "image,video")...)
	}
	ip, np := kit.FreePort(t), kit.FreePort(t)
	st.ingestURL, st.notifURL = "http://"+kit.Addr(ip), "http://"+kit.Addr(np)
	st.notifier = svc("notifier", "notifier", "notifier", nil, "-addr", kit.Addr(np))
	st.notifier.Start(t)
	st.notifier.WaitHTTP(t, st.notifURL+"/readyz", 30*time.Second)
	for i := range processors {
		pp := kit.FreePort(t)
		p := svc("processor-"+strconv.Itoa(i+1), "processor", "processor", []string{provider.EnvSimCallLog + "=" + st.callLog},
			"-addr", kit.Addr(pp), "-provider", "sim", "-concurrency", "16", "-max-per-user", "8",
			"-ack-wait", "2s", "-max-deliver", strconv.Itoa(maxDeliver), "-grace", "1s",
			"-job-timeout", jobTimeout.String())
		p.Start(t)
		ready := "http://" + kit.Addr(pp) + "/readyz"
		p.WaitHTTP(t, ready, 30*time.Second)
		st.procs, st.procReady = append(st.procs, p), append(st.procReady, ready)
	}
	st.ingest = svc("ingest", "ingest", "ingest", nil, "-addr", kit.Addr(ip))
	st.ingest.Start(t)
	st.ingest.WaitHTTP(t, st.ingestURL+"/readyz", 30*time.Second)

	// The test edits streams and reads the outcome as the NATS admin.
	var err error
	st.nc, err = natsx.Connect(context.Background(), passwords.URL(st.natsPort, "admin"), "faults-admin",
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.nc.Close)
	if st.js, err = jetstream.New(st.nc); err != nil {
		t.Fatal(err)
	}
	defs, err := jsm.Streams(jsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.limits = map[string]int32{}
	for _, d := range defs {
		st.limits[d.Name] = d.MaxMsgSize
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range st.all() {
				t.Logf("---- %s log tail:\n%s", p.Name, p.Tail(2500))
			}
			t.Logf("process logs and the sim call log are in %s", logs)
		}
	})
	return st
}

// loopbackConf is the repository's nats.conf with its client and
// monitoring listeners moved to 127.0.0.1 (nats.conf binds 0.0.0.0, and -m
// overrides only the monitoring port, not its host).
func loopbackConf(t *testing.T, port, httpPort int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for from, to := range map[string]string{
		"listen: 0.0.0.0:4222": "listen: " + kit.Addr(port),
		"http: 0.0.0.0:8222":   "http: " + kit.Addr(httpPort),
	} {
		if !strings.Contains(conf, from) {
			t.Fatalf("nats.conf no longer says %q: update loopbackConf", from)
		}
		conf = strings.Replace(conf, from, to, 1)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (st *stack) all() []*kit.Proc {
	return append([]*kit.Proc{st.nats, st.ingest, st.notifier}, st.procs...)
}

func (st *stack) natsHealthURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", st.natsHTTP)
}

// restart SIGKILLs (or SIGTERMs) p, waits pause, starts it again and waits
// until ready answers; a process that exits while starting (a service
// that found NATS down) is started again, within 60s.
func restart(ctx context.Context, p *kit.Proc, sig syscall.Signal, pause time.Duration, ready string) error {
	p.Signal(sig)
	sleep(ctx, pause)
	return ensureRunning(p, ready)
}

// ensureRunning starts p if it is not running and waits for ready, trying
// again while it exits at start, for up to 60s.
func ensureRunning(p *kit.Proc, ready string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if !p.Running() {
			if err := p.TryStart(); err != nil {
				return err
			}
		}
		err := p.WaitHTTPErr(ready, 20*time.Second)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		sleep(context.Background(), 250*time.Millisecond)
	}
}

// setMaxMsgSize edits one stream's max_msg_size through the JetStream API
// (what `nats stream edit --max-msg-size` does), retrying while NATS is
// down, until d passes.
func (st *stack) setMaxMsgSize(name string, size int32, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		s, err := st.js.Stream(ctx, name)
		if err == nil {
			cfg := s.CachedInfo().Config
			if cfg.MaxMsgSize == size {
				cancel()
				return nil
			}
			cfg.MaxMsgSize = size
			_, err = st.js.UpdateStream(ctx, cfg)
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("stream %s max_msg_size %d: %w", name, size, last)
}

// heal undoes every fault: NATS, the processors and the notifier run, and
// EVENTS and KV_job_status take messages again.
func (st *stack) heal() error {
	var errs []error
	if err := ensureRunning(st.nats, st.natsHealthURL()); err != nil {
		errs = append(errs, err)
	}
	for _, name := range []string{streams.Events, "KV_job_status"} {
		if err := st.setMaxMsgSize(name, st.limits[name], time.Minute); err != nil {
			errs = append(errs, err)
		}
	}
	for i, p := range st.procs {
		if err := ensureRunning(p, st.procReady[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ensureRunning(st.notifier, st.notifURL+"/readyz"); err != nil {
		errs = append(errs, err)
	}
	if err := ensureRunning(st.ingest, st.ingestURL+"/readyz"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
