package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/streams"
	"github.com/beamline/beamline/test/chaos/kit"
)

var (
	buildOnce sync.Once
	serverBin string
	buildErr  error
)

// TestMain removes the nats-server built for the hard-kill test.
func TestMain(m *testing.M) {
	code := m.Run()
	if serverBin != "" {
		os.RemoveAll(filepath.Dir(serverBin))
	}
	os.Exit(code)
}

// natsServerBin builds nats-server (the version in go.mod, from the module
// cache) once per test binary run.
func natsServerBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "beamline-cluster-bin-")
		if err != nil {
			buildErr = err
			return
		}
		serverBin = filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", serverBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return serverBin
}

// node is one nats-server OS process of the cluster.
type node struct {
	name       string
	port       int
	args       []string
	logPath    string
	mu         sync.Mutex
	cmd        *exec.Cmd
	waitResult chan error
}

func (n *node) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

func (n *node) start(t *testing.T, bin string) {
	t.Helper()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, n.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", n.name, err)
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		logf.Close()
	}()
	n.mu.Lock()
	n.cmd, n.waitResult = cmd, done
	n.mu.Unlock()
}

// kill sends SIGKILL (no shutdown, no leadership hand-over) and reaps the
// process.
func (n *node) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.waitResult
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// startProcessCluster runs three JetStream nats-server processes on
// 127.0.0.1, routed to each other, each with a store folder in t.TempDir().
func startProcessCluster(t *testing.T) []*node {
	t.Helper()
	bin := natsServerBin(t)
	var routes []string
	var clusterPorts []int
	for range 3 {
		p := freePort(t)
		clusterPorts = append(clusterPorts, p)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	logDir := t.TempDir()
	var nodes []*node
	for i := range 3 {
		n := &node{name: "p" + strconv.Itoa(i+1), port: freePort(t), logPath: filepath.Join(logDir, fmt.Sprintf("p%d.log", i+1))}
		n.args = []string{
			"--name", n.name, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port),
			"-js", "-sd", t.TempDir(),
			"--cluster_name", "beamline", "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[i]),
			"--routes", strings.Join(routes, ","),
		}
		n.start(t, bin)
		nodes = append(nodes, n)
		t.Cleanup(n.kill)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range nodes {
				b, _ := os.ReadFile(n.logPath)
				t.Logf("%s log (tail):\n%s", n.name, tail(string(b), 3000))
			}
		}
	})
	for _, n := range nodes {
		kit.WaitFor(t, 20*time.Second, n.name+" accepting clients", func() bool {
			nc, err := nats.Connect(n.url(), nats.Timeout(time.Second))
			if err != nil {
				return false
			}
			nc.Close()
			return true
		})
	}
	return nodes
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// TestJobsLeaderHardKill is TestJobsLeaderFailover with the servers as OS
// processes and the JOBS stream leader killed with SIGKILL: no graceful
// hand-over, the two survivors must notice the loss and elect a new leader
// while submissions keep coming. Every 202 must complete; then the killed
// node is restarted on its store folder and must rejoin as a current
// replica.
func TestJobsLeaderHardKill(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster hard-kill test: three nats-server processes and an election")
	}
	nodes := startProcessCluster(t)
	start := time.Now()
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url())
	}
	var killed *node
	adminJS, leader := failover(t, "cluster-sigkill", start, strings.Join(urls, ","), func(name string) bool {
		for _, n := range nodes {
			if n.name == name {
				t.Logf("SIGKILL %s (pid %d), the JOBS stream leader", name, n.cmd.Process.Pid)
				n.kill()
				killed = n
				return true
			}
		}
		return false
	})
	if killed == nil || t.Failed() {
		return
	}

	// The killed node comes back on its store folder and catches up.
	killed.start(t, natsServerBin(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kit.WaitFor(t, 30*time.Second, leader+" back as a current JOBS replica", func() bool {
		st, err := adminJS.Stream(ctx, streams.Jobs)
		if err != nil {
			return false
		}
		ci := st.CachedInfo().Cluster
		if ci == nil {
			return false
		}
		for _, r := range ci.Replicas {
			if r.Name == leader && r.Current {
				return true
			}
		}
		return false
	})
	msg := fmt.Sprintf("cluster-sigkill: %s restarted and rejoined as a current replica after %s",
		leader, time.Since(start).Round(time.Second))
	kit.Figures(t, msg)
}
