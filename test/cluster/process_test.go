package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/beamline/beamline/streams"
	"github.com/beamline/beamline/test/chaos/kit"
)

// node is one nats-server OS process of the cluster.
type node struct {
	*kit.Proc
	port int
}

func (n *node) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// startProcessCluster runs three JetStream nats-server processes on
// 127.0.0.1, routed to each other, each with a store folder in t.TempDir().
func startProcessCluster(t *testing.T) []*node {
	t.Helper()
	bin := filepath.Join(kit.Build(t, "nats-server"), "nats-server")
	var routes []string
	var clusterPorts []int
	for range 3 {
		p := kit.FreePort(t)
		clusterPorts = append(clusterPorts, p)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	logDir := t.TempDir()
	var nodes []*node
	for i := range 3 {
		name := "p" + strconv.Itoa(i+1)
		port := kit.FreePort(t)
		n := &node{port: port, Proc: kit.NewProc(t, logDir, name, bin, nil,
			"--name", name, "-a", "127.0.0.1", "-p", strconv.Itoa(port),
			"-js", "-sd", t.TempDir(),
			"--cluster_name", "beamline", "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[i]),
			"--routes", strings.Join(routes, ","),
		)}
		n.Start(t)
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("%s log (tail):\n%s", n.Name, n.Tail(3000))
			}
		}
	})
	for _, n := range nodes {
		kit.WaitFor(t, 20*time.Second, n.Name+" accepting clients", func() bool {
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
			if n.Name == name {
				t.Logf("SIGKILL %s (pid %d), the JOBS stream leader", name, n.Pid())
				n.Signal(syscall.SIGKILL)
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
	killed.Start(t)
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
