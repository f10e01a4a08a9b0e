// Package faults is a randomized fault checker in the spirit of Jepsen,
// small enough for CI. Beamline runs as real OS processes (nats-server,
// ingest, two processors, a notifier, as test/chaos runs them); a schedule
// drawn from one seed submits sim jobs over HTTP with every provider
// outcome (success, transient failures, panics, hangs, terminal failures,
// jobs that die), cancels some at random moments (also right after the
// 202), and meanwhile SIGKILLs processors, makes EVENTS and job_status
// refuse writes (max_msg_size 1, as `nats stream edit` would), restarts and
// kills nats-server (same store, same port), restarts the notifier and drops
// WebSocket clients, which resume with last_seq. Then it heals every fault,
// waits for quiescence and checks every promise for every job (check_test.go).
//
//	go test ./test/faults -run Faults -v                        # 2 minutes of schedule, fresh seed
//	go test ./test/faults -run Faults -v -faults.duration 10m   # longer
//	go test ./test/faults -run Faults -v -faults.seed 42        # reproduce a seed
//
// BEAMLINE_FAULTS_SEED and BEAMLINE_FAULTS_DURATION do what the flags do;
// BEAMLINE_FAULTS_LOG_DIR keeps the process logs. It skips under -short.
package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/streams"
	"github.com/beamline/beamline/test/chaos/kit"
)

var (
	flagSeed     = flag.Uint64("faults.seed", 0, "seed of the schedule (default $BEAMLINE_FAULTS_SEED, else a fresh random seed)")
	flagDuration = flag.Duration("faults.duration", 0, "length of the schedule (default $BEAMLINE_FAULTS_DURATION, else 2m)")
)

const (
	defaultDuration = 2 * time.Minute
	// quiesceWithin bounds the wait, after every fault is healed, until
	// every accepted job is terminal and JOBS is empty.
	quiesceWithin = 3 * time.Minute
	// clientsWithin bounds the wait until every client has every event.
	clientsWithin = time.Minute
	submitTries   = 20
	deleteTries   = 8
	inFlightJobs  = 64
)

func settings(t *testing.T) (uint64, time.Duration) {
	t.Helper()
	seed := *flagSeed
	if seed == 0 {
		if s := os.Getenv("BEAMLINE_FAULTS_SEED"); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("BEAMLINE_FAULTS_SEED: %v", err)
			}
			seed = v
		}
	}
	for seed == 0 {
		seed = rand.Uint64() % 1_000_000_000 // short enough to type
	}
	d := *flagDuration
	if d == 0 {
		if s := os.Getenv("BEAMLINE_FAULTS_DURATION"); s != "" {
			v, err := time.ParseDuration(s)
			if err != nil {
				t.Fatalf("BEAMLINE_FAULTS_DURATION: %v", err)
			}
			d = v
		}
	}
	if d <= 0 {
		d = defaultDuration
	}
	return seed, d
}

// acceptedJob is a job that got its 202, and what its DELETE answered.
type acceptedJob struct {
	plan jobPlan
	id   string
	// cancel: the last 200 of a DELETE (its body), if any.
	cancelled *envelope.Snapshot
	deletes   []int // statuses of every DELETE sent
	// acceptedAt is the offset of the 202 from the start of the schedule.
	acceptedAt time.Duration
}

type run struct {
	t      *testing.T
	st     *stack
	sch    schedule
	start  time.Time
	hc     *http.Client
	tokens map[string]string

	mu         sync.Mutex
	accepted   map[string]*acceptedJob
	byN        map[int]string
	unaccepted []string
	faultsDone map[string]int
	faultErrs  []string
	faultLog   []string // what ran when, for explaining a failure
	badAnswers []string // HTTP answers no fault excuses (not 2xx, 409, 429, 503)
	clients    []*client
	userClient map[string]*client
	jobClients map[string][]*client
	assigned   map[*client]int
	clientWG   sync.WaitGroup
	clientCtx  context.Context
	refused    atomic.Int64
	kvWatch    *kvWatch
}

func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault checker: minutes of real processes")
	}
	seed, d := settings(t)
	sch := makeSchedule(seed, d, 16)
	t.Logf("faults seed %d, schedule %s: %s", seed, d, sch.summary())
	t.Logf("reproduce: go test ./test/faults -run Faults -v -faults.seed %d -faults.duration %s", seed, d)
	st := startStack(t)
	r := &run{t: t, st: st, sch: sch, hc: &http.Client{Timeout: 10 * time.Second},
		tokens: map[string]string{}, accepted: map[string]*acceptedJob{}, byN: map[int]string{},
		faultsDone: map[string]int{}, userClient: map[string]*client{}, jobClients: map[string][]*client{},
		assigned: map[*client]int{}}
	t.Cleanup(func() { closeIdle(r.hc) })
	for _, u := range users {
		tok, err := auth.Issue([]byte(secret), u, false, 2*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		r.tokens[u] = tok
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+quiesceWithin+clientsWithin+2*time.Minute)
	defer cancel()
	cctx, stopClients := context.WithCancel(ctx)
	r.clientCtx = cctx
	defer func() { stopClients(); r.clientWG.Wait() }()
	var err error
	if r.kvWatch, err = startKVWatch(cctx, st.js); err != nil {
		t.Fatal(err)
	}
	defer r.kvWatch.stop()
	r.mu.Lock()
	for _, u := range users {
		r.userClient[u] = r.newClientLocked(u, true)
	}
	r.mu.Unlock()
	kit.WaitFor(t, 30*time.Second, "user clients joined", func() bool {
		for _, c := range r.userClient {
			c.mu.Lock()
			j := c.joins
			c.mu.Unlock()
			if j == 0 {
				return false
			}
		}
		return true
	})

	r.start = time.Now()
	r.execute(ctx)
	t.Logf("schedule done after %s: %d accepted, %d not accepted, faults %s",
		time.Since(r.start).Round(time.Millisecond), len(r.accepted), len(r.unaccepted), countList(r.faultsDone))
	for _, e := range r.faultErrs {
		t.Logf("fault: %s", e)
	}
	if err := st.heal(); err != nil {
		t.Fatalf("healing: %v", err)
	}
	healed := time.Now()
	quiet := r.quiesce(ctx)
	t.Logf("quiescent: %v after %s", quiet, time.Since(healed).Round(time.Millisecond))
	r.waitClients(ctx)
	stopClients()
	r.clientWG.Wait()
	r.kvWatch.stop()

	obs, err := observe(ctx, st)
	if err != nil {
		t.Fatalf("reading the outcome: %v", err)
	}
	rep := r.check(obs)
	kit.Figures(t, rep.figures(seed, d, time.Since(r.start)))
	if len(rep.violations) > 0 {
		sort.Strings(r.faultLog)
		t.Logf("faults as they ran (offsets from the start of the schedule):\n  %s", strings.Join(r.faultLog, "\n  "))
		rep.explain(t, obs)
		if dir := violationsDir(); dir != "" {
			if err := rep.writeAll(dir, obs); err != nil {
				t.Logf("writing the violations: %v", err)
			} else {
				t.Logf("every violating job is in %s", filepath.Join(dir, "faults-violations.txt"))
			}
		}
		t.Errorf("seed %d: %d violations (%s); reproduce with -faults.seed %d -faults.duration %s",
			seed, len(rep.violations), countList(rep.kinds()), seed, d)
	}
}

// newClientLocked starts a client; r.mu is held.
func (r *run) newClientLocked(user string, userTopic bool) *client {
	name := fmt.Sprintf("ws-%d-%s", len(r.clients), user)
	c := newClient(name, r.st.notifURL, r.tokens[user], user, userTopic, r.t.Logf)
	r.clients = append(r.clients, c)
	r.clientWG.Add(1)
	go func() {
		defer r.clientWG.Done()
		c.run(r.clientCtx)
	}()
	return c
}

// watch has a job client of the job's user join job:<id>; a client takes
// maxTopics topics, then the next one opens.
func (r *run) watch(user, id string, fresh bool) {
	r.mu.Lock()
	cs := r.jobClients[user]
	var c *client
	if len(cs) > 0 && r.assigned[cs[len(cs)-1]] < maxTopics {
		c = cs[len(cs)-1]
	} else {
		c = r.newClientLocked(user, false)
		r.jobClients[user] = append(cs, c)
	}
	r.assigned[c]++
	r.mu.Unlock()
	c.add <- jobWatch{id: id, fresh: fresh} // buffered for maxTopics: never blocks
}

// execute runs the schedule: every submission (with its cancel and watch)
// and every fault at its offset. It returns when all are done.
func (r *run) execute(ctx context.Context) {
	var wg sync.WaitGroup
	lanes := map[string][]faultPlan{}
	for _, f := range r.sch.Faults {
		lane := f.Kind
		if f.Kind == faultNATSKill {
			lane = faultNATSRestart // one nats-server: one lane
		}
		lanes[lane] = append(lanes[lane], f)
	}
	for _, fs := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, f := range fs {
				sleep(ctx, time.Until(r.start.Add(f.At)))
				if ctx.Err() != nil {
					return
				}
				r.fault(ctx, f)
			}
		}()
	}
	sem := make(chan struct{}, inFlightJobs)
	for _, jp := range r.sch.Jobs {
		sleep(ctx, time.Until(r.start.Add(jp.At)))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.job(ctx, jp)
		}()
	}
	wg.Wait()
}

func (r *run) fault(ctx context.Context, f faultPlan) {
	began := time.Since(r.start)
	var err error
	st := r.st
	switch f.Kind {
	case faultProcKill:
		err = restart(ctx, st.procs[f.Target], syscall.SIGKILL, f.For, st.procReady[f.Target])
	case faultNotifier:
		err = restart(ctx, st.notifier, syscall.SIGKILL, f.For, st.notifURL+"/readyz")
	case faultNATSRestart:
		err = restart(ctx, st.nats, syscall.SIGTERM, f.For, st.natsHealthURL())
	case faultNATSKill:
		err = restart(ctx, st.nats, syscall.SIGKILL, f.For, st.natsHealthURL())
	case faultEventsOutage, faultKVOutage:
		name := streams.Events
		if f.Kind == faultKVOutage {
			name = "KV_job_status"
		}
		if err = st.setMaxMsgSize(name, 1, 5*time.Second); err == nil {
			sleep(ctx, f.For)
		}
		if rerr := st.setMaxMsgSize(name, st.limits[name], time.Minute); rerr != nil {
			err = errors.Join(err, rerr)
		}
	case faultClientDrop:
		r.mu.Lock()
		c := r.clients[f.Target%len(r.clients)]
		r.mu.Unlock()
		c.disconnect()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faultLog = append(r.faultLog, fmt.Sprintf("%8.3fs..%8.3fs %s target %d", // padded: sorts by time
		began.Seconds(), time.Since(r.start).Seconds(), f.Kind, f.Target))
	if err != nil {
		r.faultErrs = append(r.faultErrs, fmt.Sprintf("%s: %v", f, err))
		return
	}
	r.faultsDone[f.Kind]++
}

// job submits one job, then cancels and watches it as planned.
func (r *run) job(ctx context.Context, jp jobPlan) {
	user, token := jp.User, r.tokens[jp.User]
	body := map[string]any{"kind": jp.Kind, "priority": jp.Priority, "input": map[string]any{"sim": jp.Sim}}
	key := fmt.Sprintf("faults-%d-%d", r.sch.Seed, jp.N)
	var sub kit.Submission
	var err error
	accepted, tries := false, 0
	for try := 0; try < submitTries && ctx.Err() == nil; try++ {
		tries++
		sub, err = kit.Submit(ctx, r.hc, r.st.ingestURL, token, key, body)
		if err == nil && sub.Status == http.StatusAccepted {
			accepted = true
			break
		}
		if err == nil && sub.Status != http.StatusTooManyRequests && sub.Status != http.StatusServiceUnavailable {
			r.mu.Lock()
			r.badAnswers = append(r.badAnswers, fmt.Sprintf("POST of job %d answered %d %s", jp.N, sub.Status, bytes.TrimSpace(sub.Body)))
			r.mu.Unlock()
			break
		}
		r.refused.Add(1)
		sleep(ctx, time.Duration(100*(try+1))*time.Millisecond)
	}
	if !accepted {
		r.mu.Lock()
		r.unaccepted = append(r.unaccepted, fmt.Sprintf("job %d: %d %s %v", jp.N, sub.Status, bytes.TrimSpace(sub.Body), err))
		r.mu.Unlock()
		return
	}
	id := sub.Snapshot.ID
	// A retry with the same key answers the job as it is now; a first
	// answer is the queued snapshot.
	if tries == 1 && (sub.Snapshot.Status != envelope.StatusQueued || sub.Snapshot.Seq != 0) {
		r.mu.Lock()
		r.badAnswers = append(r.badAnswers, fmt.Sprintf("202 of job %d (%s) is %s seq %d, want queued seq 0", jp.N, id, sub.Snapshot.Status, sub.Snapshot.Seq))
		r.mu.Unlock()
	}
	aj := &acceptedJob{plan: jp, id: id, acceptedAt: time.Since(r.start)}
	r.mu.Lock()
	r.accepted[id] = aj
	r.byN[jp.N] = id
	r.mu.Unlock()
	acceptedAt := time.Now()

	// The cancel and the watch, in the order of their offsets.
	type step struct {
		after time.Duration
		do    func()
	}
	var steps []step
	if jp.CancelAfter >= 0 {
		steps = append(steps, step{jp.CancelAfter, func() { r.cancel(ctx, aj, token) }})
	}
	if jp.Watch {
		steps = append(steps, step{jp.WatchAfter, func() { r.watch(user, id, jp.WatchFresh) }})
	}
	if len(steps) == 2 && steps[1].after < steps[0].after {
		steps[0], steps[1] = steps[1], steps[0]
	}
	for _, s := range steps {
		sleep(ctx, time.Until(acceptedAt.Add(s.after)))
		s.do()
	}
}

// cancel sends DELETE /v1/jobs/{id}, again after a 503 or a transport
// error, and records the answers.
func (r *run) cancel(ctx context.Context, aj *acceptedJob, token string) {
	for try := 0; try < deleteTries && ctx.Err() == nil; try++ {
		status, snap, err := del(ctx, r.hc, r.st.ingestURL, token, aj.id)
		r.mu.Lock()
		switch status {
		case 0, http.StatusOK, http.StatusConflict, http.StatusServiceUnavailable:
		default:
			r.badAnswers = append(r.badAnswers, fmt.Sprintf("DELETE of job %s answered %d", aj.id, status))
		}
		aj.deletes = append(aj.deletes, status)
		if status == http.StatusOK {
			aj.cancelled = &snap
		}
		r.mu.Unlock()
		if err == nil && status != http.StatusServiceUnavailable {
			return
		}
		sleep(ctx, time.Duration(100*(try+1))*time.Millisecond)
	}
}

func del(ctx context.Context, c *http.Client, base, token, id string) (int, envelope.Snapshot, error) {
	var snap envelope.Snapshot
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, base+"/v1/jobs/"+id, nil)
	if err != nil {
		return 0, snap, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, snap, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, snap, err
	}
	if resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(b, &snap)
	}
	return resp.StatusCode, snap, err
}

// quiesce waits until every accepted job is terminal in job_status and
// JOBS is empty, or quiesceWithin passes.
func (r *run) quiesce(ctx context.Context) bool {
	kv, err := r.st.js.KeyValue(ctx, streams.JobStatus)
	if err != nil {
		r.t.Errorf("job_status: %v", err)
		return false
	}
	r.mu.Lock()
	pending := make([]string, 0, len(r.accepted))
	for id := range r.accepted {
		pending = append(pending, id)
	}
	r.mu.Unlock()
	deadline := time.Now().Add(quiesceWithin)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var still []string
		for _, id := range pending {
			e, err := kv.Get(ctx, id)
			if err != nil {
				still = append(still, id)
				continue
			}
			if snap, err := envelope.DecodeSnapshot(e.Value()); err != nil || !snap.Status.Terminal() {
				still = append(still, id)
			}
		}
		pending = still
		if len(pending) == 0 {
			s, err := r.st.js.Stream(ctx, streams.Jobs)
			if err == nil && s.CachedInfo().State.Msgs == 0 {
				return true
			}
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return false
}

// waitClients waits until every client has received every event of what
// it watches (per job_status), or clientsWithin passes.
func (r *run) waitClients(ctx context.Context) {
	kv, err := r.st.js.KeyValue(ctx, streams.JobStatus)
	if err != nil {
		return
	}
	last := map[string]jobEnd{}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return
	}
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		if snap, err := envelope.DecodeSnapshot(e.Value()); err == nil {
			last[k] = jobEnd{User: snap.User, Seq: snap.Seq}
		}
	}
	_ = lister.Stop()
	deadline := time.Now().Add(clientsWithin)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		done := true
		r.mu.Lock()
		clients := append([]*client(nil), r.clients...)
		r.mu.Unlock()
		for _, c := range clients {
			if !c.complete(last) {
				done = false
				break
			}
		}
		if done {
			return
		}
		sleep(ctx, 250*time.Millisecond)
	}
}

// kvWatch records, per job, the first terminal snapshot job_status held
// and every later change of it: terminal states are final.
type kvWatch struct {
	w       jetstream.KeyWatcher
	done    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	final   map[string]envelope.Snapshot
	changed map[string][]string
	updates int
}

func startKVWatch(ctx context.Context, js jetstream.JetStream) (*kvWatch, error) {
	kv, err := js.KeyValue(ctx, streams.JobStatus)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, err
	}
	k := &kvWatch{w: w, done: make(chan struct{}), final: map[string]envelope.Snapshot{}, changed: map[string][]string{}}
	go func() {
		defer close(k.done)
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			snap, err := envelope.DecodeSnapshot(e.Value())
			if err != nil {
				continue // dlq.<job> markers
			}
			k.mu.Lock()
			k.updates++
			if f, ok := k.final[snap.ID]; ok {
				if f.Seq != snap.Seq || f.Status != snap.Status {
					k.changed[snap.ID] = append(k.changed[snap.ID],
						fmt.Sprintf("terminal %s seq %d became %s seq %d", f.Status, f.Seq, snap.Status, snap.Seq))
				}
			} else if snap.Status.Terminal() {
				k.final[snap.ID] = snap
			}
			k.mu.Unlock()
		}
	}()
	return k, nil
}

func (k *kvWatch) stop() {
	k.once.Do(func() {
		_ = k.w.Stop()
		select {
		case <-k.done:
		case <-time.After(10 * time.Second):
		}
	})
}

func (k *kvWatch) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.updates
}

// violationsDir is where the full list of violating jobs goes:
// $BEAMLINE_FAULTS_LOG_DIR, else $BEAMLINE_ARTIFACTS (CI keeps it).
func violationsDir() string {
	if d := os.Getenv("BEAMLINE_FAULTS_LOG_DIR"); d != "" {
		return d
	}
	return os.Getenv("BEAMLINE_ARTIFACTS")
}
