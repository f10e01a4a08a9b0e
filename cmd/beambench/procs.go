package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/freeport"
)

// pushClients is the push scenario's clients, in this process or in children.
type pushClients interface {
	counts() (connected, failed int)
	err() error
	// collect returns every latency the clients recorded and the pushes they got.
	collect() (*latencies, int64, error)
	stop()
}

type localSet struct {
	cs     *clientSet
	cancel context.CancelFunc
}

func localClients(ctx context.Context, notifierURL, tok, prefix string, k int, lean bool) (pushClients, error) {
	ids := make([]string, k)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	cs := openClients(ctx, notifierURL, tok, ids, 32, lean)
	hctx, cancel := context.WithCancel(ctx)
	go cs.heartbeats(hctx)
	return &localSet{cs: cs, cancel: cancel}, nil
}

func (l *localSet) counts() (int, int) { return len(l.cs.conns), l.cs.failed }
func (l *localSet) err() error         { return l.cs.firstErr }
func (l *localSet) collect() (*latencies, int64, error) {
	return l.cs.lat, l.cs.received.Load(), nil
}
func (l *localSet) stop() { l.cancel(); l.cs.close() }

// child is one push-clients process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	ready childReady
}

type childSet struct{ kids []*child }

// spawnClients starts procs children of this executable, each holding its
// share of the k clients, and waits until every one reported ready.
func spawnClients(ctx context.Context, notifierURL, tok, prefix string, k, procs int, lean bool, log *slog.Logger) (pushClients, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	set := &childSet{}
	per := (k + procs - 1) / procs
	for from := 0; from < k; from += per {
		n := min(per, k-from)
		cmd := exec.Command(exe, "push-clients", "-notifier", notifierURL, "-prefix", prefix,
			"-from", strconv.Itoa(from), "-count", strconv.Itoa(n), "-lean="+strconv.FormatBool(lean))
		cmd.Env = append(os.Environ(), envClientToken+"="+tok)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			set.stop()
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			set.stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			set.stop()
			return nil, err
		}
		set.kids = append(set.kids, &child{cmd: cmd, stdin: stdin, out: bufio.NewReaderSize(stdout, 1<<20)})
	}
	for _, c := range set.kids {
		line, err := readLine(ctx, c.out, 5*time.Minute)
		if err == nil {
			err = json.Unmarshal(line, &c.ready)
		}
		if err != nil {
			set.stop()
			return nil, fmt.Errorf("push-clients child %d: %w", c.cmd.Process.Pid, err)
		}
		log.Info("push clients ready", "pid", c.cmd.Process.Pid, "ready", c.ready.Ready, "failed", c.ready.Failed, "err", c.ready.Err)
	}
	return set, nil
}

// readLine reads one line within timeout.
func readLine(ctx context.Context, r *bufio.Reader, timeout time.Duration) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := r.ReadBytes('\n')
		ch <- res{b, err}
	}()
	select {
	case x := <-ch:
		return x.b, x.err
	case <-time.After(timeout):
		return nil, errors.New("timed out")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *childSet) counts() (int, int) {
	c, f := 0, 0
	for _, k := range s.kids {
		c += k.ready.Ready
		f += k.ready.Failed
	}
	return c, f
}

func (s *childSet) err() error {
	for _, k := range s.kids {
		if k.ready.Err != "" {
			return errors.New(k.ready.Err)
		}
	}
	return nil
}

func (s *childSet) collect() (*latencies, int64, error) {
	lat := newLatencies(1 << 22)
	var got int64
	for _, k := range s.kids {
		if _, err := io.WriteString(k.stdin, "stop\n"); err != nil {
			return nil, 0, err
		}
	}
	for _, k := range s.kids {
		line, err := readLine(context.Background(), k.out, time.Minute)
		if err != nil {
			return nil, 0, fmt.Errorf("push-clients result: %w", err)
		}
		var r childResult
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, 0, err
		}
		got += r.Received
		for _, us := range r.LatUS {
			lat.add(time.Duration(us) * time.Microsecond)
		}
	}
	return lat, got, nil
}

func (s *childSet) stop() {
	for _, k := range s.kids {
		k.stdin.Close()
	}
	for _, k := range s.kids {
		waitOrKill(k.cmd, 20*time.Second)
	}
}

// waitOrKill waits until cmd exits, killing it when d passes first.
func waitOrKill(cmd *exec.Cmd, d time.Duration) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
	}
}

// memSample is a process's resident set, Go heap and goroutine stacks in
// use, in bytes, and its goroutines (stack and goroutines: separate notifier only).
type memSample struct{ rss, heap, stack, goroutines uint64 }

type memProbe func() memSample

// selfProbe measures this process (in-process devstack).
func selfProbe() memSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{rss: rssOf("self"), heap: ms.HeapInuse}
}

// settleGC collects garbage here (a separate notifier collects on its own).
func settleGC() { runtime.GC() }

// rssOf reads VmRSS of /proc/<pid>/status in bytes.
func rssOf(pid string) uint64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// notifierProc is cmd/notifier run as a separate process on the target's NATS.
type notifierProc struct {
	cmd   *exec.Cmd
	url   string
	pprof string // base URL of its net/http/pprof ("" when not profiled)
}

func startNotifierProc(ctx context.Context, t *target, o *options) (*notifierProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"-nats", t.natsURL, "-addr", addr, "-log-level", "warn"}
	var pprofAddr string
	if o.notifierProfile != "" {
		if pprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		args = append(args, "-pprof", pprofAddr)
	}
	cmd := exec.Command(o.notifierBin, args...)
	cmd.Env = append(os.Environ(), auth.EnvSecret+"="+string(t.secret))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	np := &notifierProc{cmd: cmd, url: "http://" + addr}
	if pprofAddr != "" {
		np.pprof = "http://" + pprofAddr + "/debug/pprof/"
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(np.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return np, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			np.stop()
			return nil, fmt.Errorf("notifier process not healthy: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr returns a loopback address with a port free a moment ago,
// outside the ephemeral range (see package freeport).
func freeAddr() (string, error) { return freeport.Addr() }

// profile saves the notifier's pprof profile name (query: e.g.
// "seconds=10") to dir/<file>; a no-op unless it runs with -pprof.
func (np *notifierProc) profile(dir, name, query, file string) error {
	if np == nil || np.pprof == "" {
		return nil
	}
	u := np.pprof + name
	if query != "" {
		u += "?" + query
	}
	resp, err := http.Get(u)
	if err != nil {
		return fmt.Errorf("notifier profile %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("notifier profile %s: HTTP %s", name, resp.Status)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, file))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (np *notifierProc) probe() memSample {
	s := memSample{rss: rssOf(strconv.Itoa(np.cmd.Process.Pid))}
	resp, err := http.Get(np.url + "/metrics")
	if err != nil {
		return s
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range bytes.Split(b, []byte("\n")) {
		for _, g := range []struct {
			name string
			to   *uint64
		}{{"go_memstats_heap_inuse_bytes ", &s.heap}, {"go_memstats_stack_inuse_bytes ", &s.stack}, {"go_goroutines ", &s.goroutines}} {
			if rest, ok := bytes.CutPrefix(line, []byte(g.name)); ok {
				f, _ := strconv.ParseFloat(string(bytes.TrimSpace(rest)), 64)
				*g.to = uint64(f)
			}
		}
	}
	return s
}

func (np *notifierProc) stop() {
	np.cmd.Process.Signal(syscall.SIGTERM)
	waitOrKill(np.cmd, 15*time.Second)
}

// cpu is the user+system CPU the notifier process used so far (0 for nil).
func (np *notifierProc) cpu() time.Duration {
	if np == nil {
		return 0
	}
	return cpuTimeOf(strconv.Itoa(np.cmd.Process.Pid))
}

// cpuTime is the user+system CPU this process used so far (clock ticks of
// 10 ms, as /proc reports them).
func cpuTime() time.Duration { return cpuTimeOf("self") }

func cpuTimeOf(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	k, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}
