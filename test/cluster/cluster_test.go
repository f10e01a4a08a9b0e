// Package cluster shows Beamline on a 3-node JetStream cluster with R3
// streams: the JOBS stream leader is shut down in the middle of a burst of
// submissions, and every job that got 202 still completes; submissions
// during the election get 503 or 429, never a 202 that is later lost.
// TestJobsLeaderFailover runs the servers in process and shuts the leader
// down (a graceful hand-over); TestJobsLeaderHardKill runs them as
// nats-server OS processes and kills the leader with SIGKILL (a real
// election), then restarts it and checks it rejoins.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/ingest"
	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
	"github.com/beamline/beamline/test/chaos/kit"
)

const (
	numJobs    = 600
	submitters = 8
	killAfter  = 150 // accepted jobs before the JOBS leader is shut down
)

var secret = []byte("cluster-test-secret-0123456789")

// startCluster runs three JetStream servers on 127.0.0.1 routed to each
// other, and waits until JetStream has a meta leader.
func startCluster(t *testing.T) []*server.Server {
	t.Helper()
	ports := []int{kit.FreePort(t), kit.FreePort(t), kit.FreePort(t)}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var srvs []*server.Server
	for i, p := range ports {
		opts := &server.Options{
			ServerName: "n" + strconv.Itoa(i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			MaxPayload: 2 << 20,
			Cluster:    server.ClusterOpts{Name: "beamline", Host: "127.0.0.1", Port: p},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		srvs = append(srvs, kit.NewServer(t, opts))
	}
	for _, s := range srvs {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("%s not ready", s.Name())
		}
	}
	kit.WaitFor(t, 30*time.Second, "a JetStream meta leader", func() bool {
		for _, s := range srvs {
			if s.JetStreamIsLeader() {
				return true
			}
		}
		return false
	})
	return srvs
}

func clientURLs(srvs []*server.Server) string {
	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.ClientURL())
	}
	return strings.Join(urls, ",")
}

func connect(t *testing.T, urls, name string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(urls, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func run(t *testing.T, name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := fn(ctx)
		if err != nil && ctx.Err() == nil {
			t.Errorf("%s stopped early: %v", name, err)
		}
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop", name)
		}
	})
}

func TestJobsLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover test: a 3-node cluster and an election")
	}
	start := time.Now()
	srvs := startCluster(t)
	failover(t, "cluster", start, clientURLs(srvs), func(name string) bool {
		for _, s := range srvs {
			if s.Name() == name {
				t.Logf("shutting down %s, the JOBS stream leader", name)
				s.Shutdown()
				return true
			}
		}
		return false
	})
}

// failover runs ingest and a processor on the cluster at urls, submits a
// burst of jobs, has kill stop the server named as the JOBS stream leader
// once killAfter jobs were accepted, and checks that every 202 completes.
// It prints the figures prefixed with label and returns the admin's
// JetStream context and the killed leader's name.
func failover(t *testing.T, label string, start time.Time, urls string, kill func(name string) bool) (jetstream.JetStream, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	_, adminJS := connect(t, urls, "test")
	// Right after the meta leader is elected the other peers may not be
	// registered yet ("no suitable peers for placement"): retry.
	var applyErr error
	kit.WaitFor(t, 30*time.Second, "R3 streams applied", func() bool {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		defer acancel()
		applyErr = jsm.ApplyStreams(actx, adminJS, jsm.Options{Replicas: 3})
		return applyErr == nil
	})
	for _, name := range []string{streams.Jobs, streams.Events, streams.DLQ, "KV_" + streams.JobStatus} {
		kit.WaitFor(t, 30*time.Second, name+" with a leader and two current replicas", func() bool {
			st, err := adminJS.Stream(ctx, name)
			if err != nil {
				return false
			}
			info := st.CachedInfo()
			if info.Config.Replicas != 3 {
				t.Fatalf("%s has %d replicas, want 3", name, info.Config.Replicas)
			}
			if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				return false
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current {
					return false
				}
			}
			return true
		})
	}

	// Ingest and one processor, in process, each on its own connection.
	inc, ijs := connect(t, urls, "ingest")
	ln := kit.Listen(t)
	ing, err := ingest.New(ingest.Config{Listener: ln, Kinds: []string{"image"}, Secret: secret, RequestTimeout: 3 * time.Second},
		inc, ijs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "ingest", ing.Run)
	base := "http://" + ln.Addr().String()

	pnc, pjs := connect(t, urls, "processor")
	proc, err := processor.New(kit.SimProcessorConfig(t, processor.Config{
		Concurrency: 16,
		MaxPerUser:  16,
		MaxDeliver:  20,
		AckWait:     5 * time.Second,
		BackoffMin:  50 * time.Millisecond,
		BackoffMax:  time.Second,
		Grace:       time.Second,
		PollWait:    250 * time.Millisecond,
	}), pnc, pjs, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// Like `restart: unless-stopped`: a processor whose setup fails (a
	// consumer create timing out during an election) is started again.
	restarts := 0
	run(t, "processor", func(ctx context.Context) error {
		for {
			err := proc.Run(ctx)
			if ctx.Err() != nil {
				return err
			}
			restarts++
			t.Logf("processor stopped (%v); starting it again", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(500 * time.Millisecond):
			}
		}
	})

	token, err := auth.Issue(secret, "failover", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	// The burst: every answer is recorded.
	var (
		mu       sync.Mutex
		accepted []string
		byCode   = map[int]int{}
		killedAt time.Time
		firstOK  time.Duration // from the kill to the first 202 after it
		// GET right after each 202: a queued job is read from its JOBS
		// message on the stream leader (jobstore.Lookup), so even across the
		// election it is 200 or a refusal (503), never 404.
		getByCode = map[int]int{}
	)
	var nAccepted atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 20 * time.Second}
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				sub, err := kit.Submit(ctx, hc, base, token, "", kit.SimJob("image", map[string]any{"duration_ms": 5 + i%20}))
				mu.Lock()
				switch {
				case err != nil:
					byCode[-1]++
					t.Errorf("submission %d: %v", i, err)
				case sub.Status == http.StatusAccepted:
					accepted = append(accepted, sub.Snapshot.ID)
					nAccepted.Add(1)
					if !killedAt.IsZero() && firstOK == 0 {
						firstOK = time.Since(killedAt)
					}
					byCode[sub.Status]++
					mu.Unlock()
					code, got, gerr := kit.Get(ctx, hc, base, token, sub.Snapshot.ID)
					mu.Lock()
					switch {
					case gerr != nil:
						getByCode[-1]++
						t.Errorf("GET %s after its 202: %v", sub.Snapshot.ID, gerr)
					case code == http.StatusOK && got.ID != sub.Snapshot.ID:
						t.Errorf("GET %s after its 202 answered job %q", sub.Snapshot.ID, got.ID)
					case code != http.StatusOK && code != http.StatusServiceUnavailable:
						t.Errorf("GET %s after its 202: %d", sub.Snapshot.ID, code)
					}
					getByCode[code]++
				case sub.Status == http.StatusServiceUnavailable || sub.Status == http.StatusTooManyRequests:
					byCode[sub.Status]++
				default:
					byCode[sub.Status]++
					t.Errorf("submission %d: unexpected %d %s", i, sub.Status, sub.Body)
				}
				mu.Unlock()
			}
		}()
	}
	var leader string
	go func() {
		for i := range numJobs {
			if i > 0 && nAccepted.Load() >= killAfter && leader == "" {
				leader = killLeader(t, ctx, adminJS, kill)
				mu.Lock()
				killedAt = time.Now()
				mu.Unlock()
			}
			select {
			case next <- i:
			case <-ctx.Done():
			}
		}
		close(next)
	}()
	wg.Wait()
	burst := time.Since(start)
	if leader == "" {
		t.Fatal("the JOBS leader was never shut down")
	}

	// Every 202 completes, read from job_status on the surviving nodes.
	// Each admin request has its own short deadline: one sent just as its
	// server died (or to a meta leader being replaced) gets no answer, and
	// would otherwise wait for the whole test's deadline.
	var kv jetstream.KeyValue
	kit.WaitFor(t, 60*time.Second, "the job_status bucket after the kill", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		kv, err = adminJS.KeyValue(cctx, streams.JobStatus)
		return err == nil
	})
	mu.Lock()
	pending := append([]string(nil), accepted...)
	mu.Unlock()
	succeeded := 0
	for len(pending) > 0 && ctx.Err() == nil {
		var still []string
		for _, id := range pending {
			gctx, gcancel := context.WithTimeout(ctx, 2*time.Second)
			e, err := kv.Get(gctx, id)
			gcancel()
			if err != nil {
				still = append(still, id)
				continue
			}
			snap, err := envelope.DecodeSnapshot(e.Value())
			if err != nil || !snap.Status.Terminal() {
				still = append(still, id)
				continue
			}
			if snap.Status != envelope.StatusSucceeded {
				t.Errorf("job %s ended %s: %s", id, snap.Status, snap.Error)
			} else {
				succeeded++
			}
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if len(pending) > 0 {
		t.Errorf("%d jobs got 202 and never completed (lost), e.g. %v", len(pending), pending[:min(5, len(pending))])
	}
	var jobsLeft uint64
	newLeader := ""
	kit.WaitFor(t, 30*time.Second, "JOBS to drain", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		st, err := adminJS.Stream(cctx, streams.Jobs)
		if err != nil {
			return false
		}
		if ci := st.CachedInfo().Cluster; ci != nil {
			newLeader = ci.Leader
		}
		jobsLeft = st.CachedInfo().State.Msgs
		return jobsLeft == 0
	})
	mu.Lock()
	figures := fmt.Sprintf(label+": submitted=%d accepted=%d refused_503=%d refused_429=%d errors=%d completed=%d lost=%d "+
		"get_after_202_ok=%d get_after_202_503=%d get_after_202_404=%d "+
		"jobs_left=%d killed_leader=%s new_leader=%s first_202_after_kill=%s burst=%s elapsed=%s",
		numJobs, len(accepted), byCode[http.StatusServiceUnavailable], byCode[http.StatusTooManyRequests], byCode[-1],
		succeeded, len(pending), getByCode[http.StatusOK], getByCode[http.StatusServiceUnavailable], getByCode[http.StatusNotFound],
		jobsLeft, leader, newLeader, firstOK.Round(time.Millisecond), burst.Round(time.Second), time.Since(start).Round(time.Second))
	mu.Unlock()
	kit.Figures(t, figures)
	if newLeader == leader {
		t.Errorf("JOBS leader is still %s", leader)
	}
	return adminJS, leader
}

// killLeader has kill stop the server leading the JOBS stream and returns
// its name.
func killLeader(t *testing.T, ctx context.Context, js jetstream.JetStream, kill func(name string) bool) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, streams.Jobs)
	if err != nil {
		t.Errorf("JOBS info: %v", err)
		return "?"
	}
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Errorf("JOBS has no leader: %v", err)
		return "?"
	}
	if !kill(info.Cluster.Leader) {
		t.Errorf("leader %q is none of the servers", info.Cluster.Leader)
		return "?"
	}
	return info.Cluster.Leader
}
