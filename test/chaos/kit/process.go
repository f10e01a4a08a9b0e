package kit

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/freeport"
)

// packages are the binaries BuildBinaries and Build know, by output name.
var packages = map[string]string{
	"nats-server": "github.com/nats-io/nats-server/v2",
	"ingest":      "github.com/beamline/beamline/cmd/ingest",
	"processor":   "github.com/beamline/beamline/cmd/processor",
	"notifier":    "github.com/beamline/beamline/cmd/notifier",
}

// BuildBinaries builds nats-server (from the module cache: it is in go.mod)
// and the three Beamline binaries into a temporary folder and returns it.
func BuildBinaries(t testing.TB) string {
	t.Helper()
	return Build(t, "nats-server", "ingest", "processor", "notifier")
}

// Build builds the named binaries (nats-server, ingest, processor,
// notifier) into a temporary folder and returns it.
func Build(t testing.TB, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, name := range names {
		pkg, ok := packages[name]
		if !ok {
			t.Fatalf("kit.Build: no binary %q", name)
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name), pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir
}

// FreePort returns a port of 127.0.0.1 that was free a moment ago, for a
// child process to bind; it is outside the ephemeral range, so no outgoing
// connection takes it meanwhile (see package freeport).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Users are the nats.conf users (ingest, processor, notifier, admin) and
// the passwords one test stack gives them.
type Users map[string]string

// URL is the client URL of user on 127.0.0.1:port, with its password.
func (u Users) URL(port int, user string) string {
	return fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", user, u[user], port)
}

// ServerEnv is what nats.conf reads from the environment: the server name,
// the store folder and every user's password.
func (u Users) ServerEnv(name, storeDir string) []string {
	env := []string{"BEAMLINE_NATS_SERVER_NAME=" + name, "BEAMLINE_NATS_STORE_DIR=" + storeDir}
	for user, pw := range u {
		env = append(env, "BEAMLINE_NATS_"+strings.ToUpper(user)+"_PASSWORD="+pw)
	}
	return env
}

// LogDir is a temporary folder for the processes' logs, or $env when that
// is set (made if missing), to keep the logs for a post-mortem.
func LogDir(t testing.TB, env string) string {
	t.Helper()
	if d := os.Getenv(env); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// Addr is 127.0.0.1:port.
func Addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// Proc is one OS process that can be killed and started again with the
// same command line; its output goes to a log file (appended across runs).
// It is SIGKILLed at cleanup.
type Proc struct {
	Name string
	bin  string
	args []string
	env  []string
	log  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
}

// NewProc describes a process; Start runs it. Its log is dir/name.log.
func NewProc(t testing.TB, dir, name, bin string, env []string, args ...string) *Proc {
	p := &Proc{Name: name, bin: bin, args: args, env: env, log: filepath.Join(dir, name+".log")}
	t.Cleanup(func() { p.Signal(syscall.SIGKILL) })
	return p
}

// Start starts the process (again).
func (p *Proc) Start(t testing.TB) {
	t.Helper()
	if err := p.TryStart(); err != nil {
		t.Fatal(err)
	}
}

// TryStart is Start that returns the error, for goroutines other than the
// test's.
func (p *Proc) TryStart() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "\n==== start %d of %s\n", p.starts+1, p.Name)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.starts++
	p.cmd = cmd
	exited := make(chan struct{})
	p.exited = exited
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(exited)
	}()
	return nil
}

// Signal sends sig and, for SIGKILL and SIGTERM, waits for the exit (a
// process that ignores SIGTERM for 30s is killed).
func (p *Proc) Signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	if sig != syscall.SIGKILL && sig != syscall.SIGTERM {
		return
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Pid is the process id of the last start (0 before the first).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process was started and has not exited.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Tail returns the last n bytes of the process's log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Count counts the occurrences of needle in the process's log.
func (p *Proc) Count(needle string) int {
	b, _ := os.ReadFile(p.log)
	return bytes.Count(b, []byte(needle))
}

// WaitHTTPErr polls url until it answers 200, the process dies, or timeout.
func (p *Proc) WaitHTTPErr(url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !p.Running() {
			return fmt.Errorf("%s exited before %s answered:\n%s", p.Name, url, p.Tail(4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s not ready within %v:\n%s", p.Name, url, timeout, p.Tail(4000))
}

// WaitHTTP is WaitHTTPErr that fails the test.
func (p *Proc) WaitHTTP(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	if err := p.WaitHTTPErr(url, timeout); err != nil {
		t.Fatal(err)
	}
}
