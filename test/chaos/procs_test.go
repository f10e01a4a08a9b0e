package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinaries builds nats-server (from the module cache: it is in go.mod)
// and the three Beamline binaries into one folder, once per test run.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, b := range []struct{ out, pkg string }{
		{"nats-server", "github.com/nats-io/nats-server/v2"},
		{"ingest", "github.com/beamline/beamline/cmd/ingest"},
		{"processor", "github.com/beamline/beamline/cmd/processor"},
		{"notifier", "github.com/beamline/beamline/cmd/notifier"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is one OS process that can be killed and started again with the
// same command line; its output goes to a log file (appended across runs).
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
}

func newProc(t *testing.T, dir, name, bin string, env []string, args ...string) *proc {
	p := &proc{name: name, bin: bin, args: args, env: env, log: filepath.Join(dir, name+".log")}
	t.Cleanup(func() { p.signal(syscall.SIGKILL) })
	return p
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n==== start %d of %s\n", p.starts+1, p.name)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.name, err)
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
}

// signal sends sig and, for SIGKILL and SIGTERM, waits for the exit.
func (p *proc) signal(sig syscall.Signal) {
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
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (p *proc) running() bool {
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

// tail returns the last n bytes of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// waitHTTP polls url until it answers 200, the process dies, or timeout.
func waitHTTP(t *testing.T, p *proc, url string, timeout time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !p.running() {
			t.Fatalf("%s exited before %s answered:\n%s", p.name, url, p.tail(4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %s not ready within %v:\n%s", p.name, url, timeout, p.tail(4000))
}

// grepLogs counts lines containing needle in the process's log.
func (p *proc) count(needle string) int {
	b, _ := os.ReadFile(p.log)
	return bytes.Count(b, []byte(needle))
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
