// Package chaos breaks a running Beamline on purpose and checks that nothing
// accepted is lost: nats-server, ingest, two processors and a notifier run as
// separate OS processes (each on its own nats.conf user); 2,000 sim jobs are
// submitted, about 30% failing transiently and some panicking; processors
// are SIGKILLed at random moments and restarted; the notifier is killed and
// restarted once while a WebSocket client watches user:<id> with replay.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
	"github.com/beamline/beamline/test/chaos/kit"
)

const (
	numJobs     = 2000
	submitters  = 16
	maxDeliver  = 6
	ackWait     = "2s"
	dieEvery    = 250 // every 250th job fails more often than max-deliver allows
	processorsN = 2
	kills       = 4
	// transientPct of the jobs fail 1–2 times before succeeding, panicPct
	// panic once: the issue's "about 30% with transient failures and some
	// with panics". The provider breaker judges a failure ratio over a
	// volume of calls, so these per-job failures do not open it.
	transientPct = 30
	panicPct     = 5
)

var secret = "chaos-test-secret-0123456789abcdef"

var passwords = kit.Users{
	"ingest": "chaos-pw-ingest", "processor": "chaos-pw-processor",
	"notifier": "chaos-pw-notifier", "admin": "chaos-pw-admin",
}

type cluster struct {
	natsURL   string
	ingest    *kit.Proc
	procs     []*kit.Proc
	notifier  *kit.Proc
	ingestURL string
	notifURL  string
	nc        *nats.Conn
	js        jetstream.JetStream
}

func startAll(t *testing.T) *cluster {
	t.Helper()
	bin := kit.BuildBinaries(t)
	logs := kit.LogDir(t, "CHAOS_LOG_DIR")
	natsPort, httpPort := kit.FreePort(t), kit.FreePort(t)
	conf, err := filepath.Abs(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	natsEnv := passwords.ServerEnv("chaos", t.TempDir())
	ns := kit.NewProc(t, logs, "nats-server", filepath.Join(bin, "nats-server"), natsEnv,
		"-c", conf, "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-m", strconv.Itoa(httpPort))
	ns.Start(t)
	ns.WaitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", httpPort), 20*time.Second)

	c := &cluster{natsURL: fmt.Sprintf("nats://127.0.0.1:%d", natsPort)}
	svc := func(name, binary, user string, args ...string) *kit.Proc {
		env := []string{"NATS_URL=" + passwords.URL(natsPort, user), "BEAMLINE_AUTH_SECRET=" + secret}
		return kit.NewProc(t, logs, name, filepath.Join(bin, binary), env, append(args, "-log-format", "json", "-kinds", "image")...)
	}
	ip, np := kit.FreePort(t), kit.FreePort(t)
	c.ingestURL, c.notifURL = "http://"+kit.Addr(ip), "http://"+kit.Addr(np)
	c.notifier = svc("notifier", "notifier", "notifier", "-addr", kit.Addr(np))
	c.notifier.Start(t)
	c.notifier.WaitHTTP(t, c.notifURL+"/readyz", 30*time.Second)
	for i := range processorsN {
		pp := kit.FreePort(t)
		p := svc("processor-"+strconv.Itoa(i+1), "processor", "processor", "-addr", kit.Addr(pp),
			"-provider", "sim", "-concurrency", "16", "-max-per-user", "16",
			"-ack-wait", ackWait, "-max-deliver", strconv.Itoa(maxDeliver), "-grace", "1s")
		p.Start(t)
		p.WaitHTTP(t, "http://"+kit.Addr(pp)+"/readyz", 30*time.Second)
		c.procs = append(c.procs, p)
	}
	c.ingest = svc("ingest", "ingest", "ingest", "-addr", kit.Addr(ip))
	c.ingest.Start(t)
	c.ingest.WaitHTTP(t, c.ingestURL+"/readyz", 30*time.Second)

	// The test reads the outcome as the NATS admin, like an operator.
	c.nc, err = nats.Connect(passwords.URL(natsPort, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.nc.Close)
	if c.js, err = jetstream.New(c.nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range append([]*kit.Proc{ns, c.ingest, c.notifier}, c.procs...) {
				t.Logf("---- %s log tail:\n%s", p.Name, p.Tail(3000))
			}
		}
	})
	return c
}

// plan says what job i does in the simulator.
func plan(i int, rnd *rand.Rand) (sim map[string]any, dies bool) {
	sim = map[string]any{"duration_ms": 10 + rnd.IntN(60)}
	switch {
	case i%dieEvery == 0:
		sim["fail_times"] = maxDeliver + 4
		return sim, true
	case rnd.IntN(100) < transientPct:
		sim["fail_times"] = 1 + rnd.IntN(2)
	}
	if rnd.IntN(100) < panicPct {
		sim["panic_times"] = 1
	}
	if rnd.IntN(100) < 10 {
		sim["steps"] = 2
	}
	return sim, false
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: a few minutes of real processes")
	}
	start := time.Now()
	c := startAll(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	token, err := auth.Issue([]byte(secret), "chaos", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	// The browser-like watcher, with replay on every reconnect.
	w := &kit.Watcher{Base: c.notifURL, Token: token, User: "chaos"}
	wctx, wcancel := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	wwg.Add(1)
	go func() { defer wwg.Done(); w.Run(wctx) }()
	defer func() { wcancel(); wwg.Wait() }()
	kit.WaitFor(t, 20*time.Second, "watcher joined", w.Joined)

	// Submit 2,000 jobs from 16 clients. 429/503 and transport errors are
	// retried with the same Idempotency-Key, so a retry never makes a second
	// job; only 202s count as accepted.
	var (
		mu       sync.Mutex
		accepted = map[string]int{} // job id → index
		dying    = map[string]bool{}
		refused  atomic.Int64
	)
	rnd := rand.New(rand.NewPCG(1, 2))
	plans := make([]map[string]any, numJobs)
	dies := make([]bool, numJobs)
	for i := range plans {
		plans[i], dies[i] = plan(i, rnd)
	}
	next := make(chan int)
	submitDone := make(chan struct{})
	var swg sync.WaitGroup
	hc := &http.Client{Timeout: 15 * time.Second}
	for range submitters {
		swg.Add(1)
		go func() {
			defer swg.Done()
			for i := range next {
				key := "chaos-" + strconv.Itoa(i)
				for attempt := 0; ctx.Err() == nil; attempt++ {
					sub, err := kit.Submit(ctx, hc, c.ingestURL, token, key, kit.SimJob("image", plans[i]))
					if err == nil && sub.Status == http.StatusAccepted {
						mu.Lock()
						accepted[sub.Snapshot.ID] = i
						if dies[i] {
							dying[sub.Snapshot.ID] = true
						}
						mu.Unlock()
						break
					}
					if err == nil && sub.Status != http.StatusTooManyRequests && sub.Status != http.StatusServiceUnavailable {
						t.Errorf("job %d: unexpected %d %s", i, sub.Status, sub.Body)
						break
					}
					refused.Add(1)
					time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
				}
			}
		}()
	}
	go func() {
		defer close(submitDone)
		for i := range numJobs {
			select {
			case next <- i:
			case <-ctx.Done():
			}
		}
		close(next)
		swg.Wait()
	}()

	// Chaos: SIGKILL the processors in turn at random moments and restart
	// them; kill and restart the notifier once, in the middle.
	seed := time.Now().UnixNano()
	t.Logf("chaos seed %d", seed)
	crng := rand.New(rand.NewPCG(uint64(seed), 4))
	killed := 0
	for k := range kills {
		select {
		case <-time.After(time.Duration(500+crng.IntN(2500)) * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("deadline during chaos")
		}
		p := c.procs[(k+crng.IntN(2))%len(c.procs)]
		p.Signal(syscall.SIGKILL)
		killed++
		t.Logf("SIGKILL %s (%s)", p.Name, time.Since(start).Round(time.Millisecond))
		if k == kills/2 {
			c.notifier.Signal(syscall.SIGKILL)
			t.Logf("SIGKILL notifier")
			c.notifier.Start(t)
			c.notifier.WaitHTTP(t, c.notifURL+"/readyz", 30*time.Second)
		}
		p.Start(t)
	}
	select {
	case <-submitDone:
	case <-ctx.Done():
		t.Fatal("submissions did not finish in time")
	}
	kv, err := c.js.KeyValue(ctx, streams.JobStatus)
	if err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	ids := make([]string, 0, len(accepted))
	for id := range accepted {
		ids = append(ids, id)
	}
	mu.Unlock()
	t.Logf("submitted: %d accepted of %d, %d refused and retried (%s)",
		len(ids), numJobs, refused.Load(), time.Since(start).Round(time.Millisecond))

	// Every accepted job ends terminal in job_status.
	final := map[string]envelope.Snapshot{}
	pending := ids
	for len(pending) > 0 && ctx.Err() == nil {
		var still []string
		for _, id := range pending {
			e, err := kv.Get(ctx, id)
			if err != nil {
				still = append(still, id)
				continue
			}
			snap, err := envelope.DecodeSnapshot(e.Value())
			if err != nil {
				t.Fatalf("job %s: undecodable snapshot: %v", id, err)
			}
			if !snap.Status.Terminal() {
				still = append(still, id)
				continue
			}
			final[id] = snap
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if len(pending) > 0 {
		t.Errorf("%d accepted jobs are not terminal (lost), e.g. %v", len(pending), pending[:min(5, len(pending))])
	}

	// The watcher saw exactly one terminal event per job.
	deadline := time.Now().Add(60 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if len(w.Terminal()) >= len(final) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	terms := w.Terminal()
	missing, multi := 0, 0
	for _, id := range ids {
		switch n := terms[id]; {
		case n == 0:
			missing++
		case n > 1:
			multi++
		}
	}
	// JOBS empty (acks are asynchronous: poll), DLQ holds exactly the dying.
	var jobsLeft uint64
	kit.WaitFor(t, 30*time.Second, "JOBS to drain", func() bool {
		st, err := c.js.Stream(ctx, streams.Jobs)
		if err != nil {
			return false
		}
		jobsLeft = st.CachedInfo().State.Msgs
		return jobsLeft == 0
	})
	dlqJobs := readDLQ(t, ctx, c.js)
	var eventsStored uint64
	if st, err := c.js.Stream(ctx, streams.Events); err == nil {
		eventsStored = st.CachedInfo().State.Msgs
	}

	counts := map[envelope.Status]int{}
	retried := 0
	for id, snap := range final {
		counts[snap.Status]++
		if snap.Attempt > 1 {
			retried++
		}
		if dying[id] != (snap.Status == envelope.StatusDead) {
			t.Errorf("job %s (designed to die: %v) ended %s after %d attempts", id, dying[id], snap.Status, snap.Attempt)
		}
		if snap.Status == envelope.StatusFailed || snap.Status == envelope.StatusCancelled {
			t.Errorf("job %s ended %s: %s", id, snap.Status, snap.Error)
		}
	}
	for id := range dlqJobs {
		if !dying[id] {
			t.Errorf("DLQ holds job %s that was not designed to die", id)
		}
	}
	for id := range dying {
		if dlqJobs[id] != 1 {
			t.Errorf("dying job %s is on the DLQ %d times, want once", id, dlqJobs[id])
		}
	}
	if missing > 0 || multi > 0 {
		t.Errorf("watcher: %d jobs without a terminal event, %d with more than one", missing, multi)
	}
	ws := w.Stats()
	if ws.OutOfOrder > 0 {
		t.Errorf("watcher saw %d events out of order within a job", ws.OutOfOrder)
	}
	if ws.Gaps > 0 {
		t.Errorf("watcher silently missed %d events of %d jobs, e.g. %v", ws.Gaps, len(ws.GapJobs), ws.GapJobs[:min(5, len(ws.GapJobs))])
	}
	if ws.Unrecovered > 0 {
		t.Errorf("watcher was told %d times that replay was impossible", ws.Unrecovered)
	}
	if ws.Joins < 2 {
		t.Errorf("watcher joined %d times: the notifier restart was not seen", ws.Joins)
	}
	panics := 0
	for _, p := range c.procs {
		panics += p.Count("panic")
	}
	figures := fmt.Sprintf("chaos: accepted=%d completed=%d retried=%d dead=%d failed=%d lost=%d jobs_left=%d dlq=%d "+
		"events_stored=%d processor_kills=%d notifier_restarts=1 refused_429_503=%d ws_events=%d ws_duplicates=%d ws_joins=%d "+
		"ws_gaps=%d ws_missing_terminal=%d ws_multi_terminal=%d elapsed=%s",
		len(ids), counts[envelope.StatusSucceeded], retried, counts[envelope.StatusDead], counts[envelope.StatusFailed],
		len(pending), jobsLeft, len(dlqJobs), eventsStored, killed, refused.Load(), ws.Events, ws.Duplicates, ws.Joins,
		ws.Gaps, missing, multi, time.Since(start).Round(time.Second))
	kit.Figures(t, figures)
	if len(ids) != numJobs {
		t.Errorf("accepted %d of %d jobs", len(ids), numJobs)
	}
}

// readDLQ counts the DLQ messages per job id.
func readDLQ(t *testing.T, ctx context.Context, js jetstream.JetStream) map[string]int {
	t.Helper()
	st, err := js.Stream(ctx, streams.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	state := st.CachedInfo().State
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		_, job, err := envelope.DecodeJob(m.Data)
		if err != nil {
			t.Errorf("DLQ message %d is not a job envelope: %v", seq, err)
			continue
		}
		out[job.ID]++
	}
	return out
}
